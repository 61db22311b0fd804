// Python pickle reading and writing, torch-free.
//
// The reader understands protocols 0 to 5 for the data types indicator files
// and PyTorch checkpoints use: dict, list, tuple, set, str, bytes, int, float,
// bool, None, the memo and frames. Objects (GLOBAL/STACK_GLOBAL, REDUCE,
// NEWOBJ, BUILD) and persistent ids are handed to PickleHooks, so the torch
// plugin can rebuild tensors and OrderedDicts without this library knowing
// torch. Every malformed input throws mpq::InputError naming the source and
// the byte offset; the reader never reads past its buffer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mpq::pickle {

class Value;
using List = std::vector<Value>;
using DictItems = std::vector<std::pair<Value, Value>>;
struct Node;

// A dynamically typed pickle value. Containers are shared (the memo and the
// stack may hold the same list, as in Python); copying a Value copies a handle.
// Containers nest at most ReadOptions::max_depth deep and never contain
// themselves: the reader refuses to add to a container that is already inside
// another (only self-referencing structures need that), so values form a tree
// and destroy without deep recursion or leaks.
class Value {
 public:
  enum class Kind { kNone, kBool, kInt, kFloat, kStr, kBytes, kList, kTuple, kSet, kDict, kGlobal, kObject, kOpaque };

  Value() = default;  // None
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value floating(double f);
  static Value str(std::string s);
  static Value bytes(std::string b);
  static Value list(List items = {});
  static Value tuple(List items = {});
  static Value set(List items = {});
  static Value dict(DictItems items = {});
  static Value global(std::string module, std::string name);
  // The result of calling `module.name(*args)`, as REDUCE or NEWOBJ made it.
  static Value object(std::string module, std::string name, List args);
  // Anything a hook makes (a tensor, a storage), typed by `type_name`.
  static Value opaque(std::shared_ptr<void> ptr, std::string type_name);

  Kind kind() const { return kind_; }
  const char* kind_name() const;  // "dict", "float", ... for error messages
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
  bool is_container() const { return node_ != nullptr; }

  // Accessors throw InputError naming the expected and actual kind.
  bool as_bool() const;
  int64_t as_int() const;
  double as_double() const;  // int, bool or float
  const std::string& as_str() const;
  const std::string& as_bytes() const;
  List& items() const;  // list, tuple, set, or an object's arguments
  DictItems& dict_items() const;
  const std::string& global_module() const;  // global or object
  const std::string& global_name() const;    // global or object
  Value& object_state() const;  // None until BUILD
  const std::string& opaque_type() const;
  std::shared_ptr<void> opaque_ptr() const;

  // Dict lookup by string key (the last match, as a Python dict keeps the last
  // SETITEM); nullptr when absent or when this is not a dict.
  const Value* find(std::string_view key) const;

  // Python-like repr, abbreviated past `max_len` characters.
  std::string repr(size_t max_len = 200) const;

  // Nesting height of a container (0 for a scalar or an empty container).
  uint32_t height() const;

 private:
  friend class Reader;
  Kind kind_ = Kind::kNone;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<std::string> s_;   // str, bytes, global module
  std::shared_ptr<std::string> s2_;  // global name, opaque type
  std::shared_ptr<Node> node_;       // list, tuple, set, dict, object
  std::shared_ptr<void> opaque_;
};

// Shared payload of containers and objects.
struct Node {
  List items;        // list, tuple, set elements; object arguments
  DictItems entries;  // dict
  Value state;       // object state set by BUILD
  std::string module, name;  // object callable
  uint32_t height = 0;
  bool sealed = false;  // inside another container: no longer mutable
};

// Extension points for objects. The defaults: find_class returns a Global;
// call_reduce maps collections.OrderedDict() to an empty dict and anything
// else to an object value; build stores the state on an object (and ignores
// it on a dict: an OrderedDict's __dict__, e.g. a state dict's _metadata);
// persistent_load throws.
class PickleHooks {
 public:
  virtual ~PickleHooks() = default;
  virtual Value find_class(const std::string& module, const std::string& name);
  // REDUCE and NEWOBJ: `callable` is what find_class returned.
  virtual Value call_reduce(const Value& callable, const List& args);
  // BUILD: may return a replacement for `obj`.
  virtual Value build(const Value& obj, const Value& state);
  virtual Value persistent_load(const Value& pid);
};

struct ReadOptions {
  std::string source = "<memory>";  // named in every error message
  PickleHooks* hooks = nullptr;     // nullptr: the defaults
  uint32_t max_depth = 1000;        // container nesting limit (Python's own recursion limit)
};

// Reads one pickle from `data`. Bytes after STOP are ignored, as in Python.
Value read(std::string_view data, const ReadOptions& options = {});

// Reads a whole file (InputError if it cannot be opened) and parses it.
Value read_file(const std::string& path, PickleHooks* hooks = nullptr);

// Writes `v` as a protocol-2 pickle that Python's pickle.load reads back.
// Supports None, bool, int, float, str, bytes, list, tuple, set, dict;
// anything else throws InputError.
std::string write(const Value& v);

}  // namespace mpq::pickle
