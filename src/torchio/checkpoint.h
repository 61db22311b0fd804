// PyTorch checkpoints as users have them, read and written without Python.
//
// On-disk layout read (torch.save's zip format, PyTorch >= 1.6):
//   <archive>/data.pkl        a pickle; tensors appear as
//                             torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)
//                             with `storage` a persistent id
//                             ('storage', torch.FloatStorage, '<key>', 'cpu', numel)
//   <archive>/data/<key>      each storage's raw little-endian bytes
// The top level may be a state dict (an OrderedDict of name -> tensor), or a
// dict holding one under 'state_dict' (or 'model'), with or without the
// 'module.' prefix of DataParallel. Storages shared by several tensors stay
// shared. torch::pickle_load cannot read these (it fails on OrderedDict).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "mpq/io/pickle.h"

namespace mpq::torchio {

using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

struct Checkpoint {
  pickle::Value root;   // the whole pickle; tensors are opaque values of type "tensor"
  StateDict state;      // the state dict found in it, 'module.' stripped, in file order
  std::string state_key;  // where it was found: "" (top level), "state_dict" or "model"
};

// Reads a checkpoint. InputError naming the file on anything malformed:
// not a zip archive (the legacy format says how to re-save), a missing
// record, a storage smaller than its tensors, a pickle error.
Checkpoint read_checkpoint(const std::string& path);

// The tensor a pickle value holds (InputError if it holds none).
torch::Tensor as_tensor(const pickle::Value& v, const std::string& what);

struct LoadReport {
  std::vector<std::string> missing, unexpected, mismatched;  // mismatched: "name: file [a, b] vs model [c, d]"
  bool clean() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string summary(size_t max_names = 5) const;
};

// Copies tensors into `module`'s parameters and buffers by name. With
// `strict`, any missing, unexpected or shape-mismatched name is an InputError
// that lists them; otherwise the report says what was skipped.
LoadReport load_state_dict(torch::nn::Module& module, const StateDict& state, bool strict, const std::string& source);

// Writes a plain dict {name: tensor} plus metadata entries (ints, floats,
// strings) in the format Python's torch.load reads, atomically.
void save_checkpoint(const std::string& path, const StateDict& tensors,
                     const std::vector<std::pair<std::string, c10::IValue>>& metadata = {});

}  // namespace mpq::torchio
