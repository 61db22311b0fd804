// Whole-file reads and writes with error checks, and SHA-256, torch-free.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace mpq::io {

// The whole file; InputError naming the path and the reason when it cannot
// be opened or read (a directory, a permission, an I/O error).
std::string read_file(const std::string& path);

// The first `n` bytes of the file (fewer when it is shorter); errors as read_file.
std::string read_head(const std::string& path, size_t n);

// Whether the file starts as torch.save's output does: a zip archive, or a
// bare pickle (protocol 2 or later, the legacy format).
bool looks_like_checkpoint(const std::string& path);

// Writes `data` to `path` without ever leaving a torn file: a regular file
// (or a new one) is replaced atomically (temporary file beside it, fsync,
// rename; the old file's permissions kept); a symlink is written through to
// the file it names; a FIFO or device is written to in place; "-" is stdout.
// Throws RuntimeError naming the path and the reason.
void write_file_atomic(const std::string& path, const std::string& data);

// Removes what write_file_atomic leaves in `dir` when its process is killed
// in the middle of a write: NAME.tmp.PID files of processes that no longer
// run. Returns the paths removed.
std::vector<std::string> remove_stale_temp_files(const std::string& dir);

// Refuses (InputError, exit 2) an output that is one of the inputs, by file
// identity (through links and other spellings of the path): `output_flag`
// and each input's flag name the two in the message. Inputs that do not
// exist and outputs "-" pass.
void check_output_is_not_an_input(const std::string& output_flag, const std::string& output,
                                  const std::vector<std::pair<std::string, std::string>>& inputs);

// Refuses (InputError, exit 2) an output whose directory is missing or not
// writable, before any work is done: commands that write several files
// check them all first, so that none is left half a set. "-" passes.
void check_output_writable(const std::string& output_flag, const std::string& output);

// Lowercase hex SHA-256 of a file's bytes.
std::string sha256_file(const std::string& path);
std::string sha256_hex(const std::string& data);

}  // namespace mpq::io
