#include "torchio/checkpoint.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <torch/serialize.h>

#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "mpq/common/error.h"
#include "mpq/io/indicators.h"

namespace mpq::torchio {

namespace {

torch::ScalarType storage_dtype(const std::string& name) {
  static const std::map<std::string, torch::ScalarType> kTypes = {
      {"FloatStorage", torch::kFloat},   {"DoubleStorage", torch::kDouble}, {"HalfStorage", torch::kHalf},
      {"BFloat16Storage", torch::kBFloat16}, {"LongStorage", torch::kLong}, {"IntStorage", torch::kInt},
      {"ShortStorage", torch::kShort},   {"CharStorage", torch::kChar},     {"ByteStorage", torch::kByte},
      {"BoolStorage", torch::kBool}};
  const auto it = kTypes.find(name);
  MPQ_CHECK(it != kTypes.end(), "unsupported storage type torch.", name);
  return it->second;
}

pickle::Value tensor_value(torch::Tensor t) {
  return pickle::Value::opaque(std::make_shared<torch::Tensor>(std::move(t)), "tensor");
}

std::vector<int64_t> int_list(const pickle::Value& v, const char* what) {
  MPQ_CHECK(v.kind() == pickle::Value::Kind::kTuple || v.kind() == pickle::Value::Kind::kList, what,
            " must be a tuple of ints, found ", v.kind_name());
  std::vector<int64_t> out;
  for (const auto& x : v.items()) out.push_back(x.as_int());
  return out;
}

// The torch side of the pickle protocol: storages from the zip records,
// tensors rebuilt as views of them.
class TorchHooks : public pickle::PickleHooks {
 public:
  explicit TorchHooks(caffe2::serialize::PyTorchStreamReader& reader) : reader_(reader) {}

  pickle::Value persistent_load(const pickle::Value& pid) override {
    MPQ_CHECK(pid.kind() == pickle::Value::Kind::kTuple && pid.items().size() >= 5, "unexpected persistent id ",
              pid.repr(80));
    const auto& f = pid.items();
    MPQ_CHECK(f[0].kind() == pickle::Value::Kind::kStr && f[0].as_str() == "storage", "unexpected persistent id ",
              pid.repr(80));
    const std::string key = f[2].as_str();
    auto it = storages_.find(key);
    if (it != storages_.end()) return tensor_value(it->second);
    MPQ_CHECK(f[1].kind() == pickle::Value::Kind::kGlobal, "storage type is a ", f[1].kind_name());
    const torch::ScalarType dtype = storage_dtype(f[1].global_name());
    const int64_t numel = f[4].as_int();
    MPQ_CHECK(numel >= 0, "storage ", key, " has negative size ", numel);
    const std::string record = "data/" + key;
    MPQ_CHECK(reader_.hasRecord(record), "missing record ", record);
    auto [data, nbytes] = reader_.getRecord(record);
    const size_t elem = torch::elementSize(dtype);
    MPQ_CHECK(static_cast<uint64_t>(numel) <= nbytes / elem, "record ", record, " holds ", nbytes,
              " bytes, too few for its storage of ", numel, " elements of ", elem, " bytes");
    const size_t need = static_cast<size_t>(numel) * elem;
    torch::Tensor storage = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
    if (need > 0) std::memcpy(storage.data_ptr(), data.get(), need);
    storages_.emplace(key, storage);
    return tensor_value(storage);
  }

  pickle::Value call_reduce(const pickle::Value& callable, const pickle::List& args) override {
    const auto& m = callable.global_module();
    const auto& n = callable.global_name();
    if (m == "torch._utils" && n == "_rebuild_tensor_v2") {
      MPQ_CHECK(args.size() >= 4, "_rebuild_tensor_v2 with ", args.size(), " arguments");
      const torch::Tensor storage = as_tensor(args[0], "a tensor's storage");
      const int64_t offset = args[1].as_int();
      const auto size = int_list(args[2], "a tensor's size");
      const auto stride = int_list(args[3], "a tensor's stride");
      MPQ_CHECK(size.size() == stride.size(), "a tensor's size and stride differ in length");
      // The largest element index the view touches, and its element count,
      // both checked for overflow: a damaged file may hold any integers.
      bool fits = offset >= 0;
      bool empty = false;
      int64_t last = offset, count = 1;
      for (size_t i = 0; i < size.size() && fits; ++i) {
        MPQ_CHECK(size[i] >= 0 && stride[i] >= 0, "a tensor has a negative size or stride");
        if (size[i] == 0) empty = true;
        int64_t reach = 0;
        fits = !__builtin_mul_overflow(size[i] == 0 ? 0 : size[i] - 1, stride[i], &reach) &&
               !__builtin_add_overflow(last, reach, &last) && !__builtin_mul_overflow(count, size[i], &count);
      }
      MPQ_CHECK(fits && (empty || last < storage.numel()), "a tensor of size ", args[2].repr(60), " at offset ",
                offset, " does not fit its storage of ", storage.numel(), " elements");
      return tensor_value(storage.as_strided(size, stride, offset));
    }
    if (m == "torch._utils" && n == "_rebuild_parameter") {
      MPQ_CHECK(!args.empty(), "_rebuild_parameter without arguments");
      return tensor_value(as_tensor(args[0], "a parameter's data"));
    }
    if (m == "torch.jit._pickle" && (n == "restore_type_tag" || n.rfind("build_", 0) == 0)) {
      // What torch::pickle_save (and TorchScript) writes around typed values.
      MPQ_CHECK(!args.empty(), m, ".", n, " without arguments");
      return args[0];
    }
    return PickleHooks::call_reduce(callable, args);
  }

 private:
  caffe2::serialize::PyTorchStreamReader& reader_;
  std::map<std::string, torch::Tensor> storages_;
};

StateDict state_from(const std::string& path, const pickle::Value& d, const std::string& where) {
  StateDict out;
  for (const auto& [k, v] : d.dict_items()) {
    MPQ_CHECK(k.kind() == pickle::Value::Kind::kStr, path, ": ", where, " has a non-string key ", k.repr(40));
    std::string name = k.as_str();
    if (name.rfind("module.", 0) == 0) name = name.substr(7);
    if (v.kind() != pickle::Value::Kind::kOpaque) continue;  // not a tensor: metadata
    out.emplace_back(name, as_tensor(v, name));
  }
  return out;
}

}  // namespace

torch::Tensor as_tensor(const pickle::Value& v, const std::string& what) {
  MPQ_CHECK(v.kind() == pickle::Value::Kind::kOpaque && v.opaque_type() == "tensor", what, " is not a tensor (found ",
            v.kind_name(), ")");
  return *static_cast<torch::Tensor*>(v.opaque_ptr().get());
}

Checkpoint read_checkpoint(const std::string& path) {
  {
    std::ifstream in(path, std::ios::binary);
    MPQ_CHECK(in.good(), path, ": cannot open (", std::strerror(errno), ")");
    char magic[2] = {0, 0};
    in.read(magic, 2);
    MPQ_CHECK(!(magic[0] == '\x80' && magic[1] == '\x02'), path,
              ": a legacy (pre-1.6) torch.save file; re-save it in Python with torch.save(obj, path) from PyTorch >= 1.6");
    MPQ_CHECK(magic[0] == 'P' && magic[1] == 'K', path, ": not a PyTorch checkpoint (expected the zip format of torch.save)");
  }
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    // torch's message runs on with advice about miniz; its first sentence says what failed.
    std::string why = e.what_without_backtrace();
    why = why.substr(0, std::min(why.find(". "), why.find('\n')));
    throw InputError(path + ": not a readable PyTorch checkpoint (" + why + "; a truncated or damaged file?)");
  }
  Checkpoint ck;
  try {
    MPQ_CHECK(reader->hasRecord("data.pkl"), "no data.pkl record");
    auto [data, nbytes] = reader->getRecord("data.pkl");
    TorchHooks hooks(*reader);
    pickle::ReadOptions opt;
    opt.source = path;
    opt.hooks = &hooks;
    ck.root = pickle::read(std::string_view(static_cast<const char*>(data.get()), nbytes), opt);
  } catch (const c10::Error& e) {
    throw InputError(path + ": corrupt checkpoint (" + e.what_without_backtrace() + ")");
  } catch (const InputError& e) {
    const std::string w = e.what();
    if (w.rfind(path + ":", 0) == 0) throw;
    throw InputError(path + ": " + w);
  }
  MPQ_CHECK(ck.root.kind() == pickle::Value::Kind::kDict, path, ": expected a dict or state dict, found a ",
            ck.root.kind_name());
  for (const char* key : {"state_dict", "model"}) {
    const pickle::Value* v = ck.root.find(key);
    if (v != nullptr && v->kind() == pickle::Value::Kind::kDict) {
      ck.state = state_from(path, *v, key);
      ck.state_key = key;
      return ck;
    }
  }
  ck.state = state_from(path, ck.root, "the checkpoint");
  return ck;
}

std::string LoadReport::summary(size_t max_names) const {
  std::ostringstream os;
  auto part = [&](const char* what, const std::vector<std::string>& names) {
    if (names.empty()) return;
    if (os.tellp() > 0) os << "; ";
    os << names.size() << " " << what << " (";
    for (size_t i = 0; i < names.size() && i < max_names; ++i) os << (i ? ", " : "") << names[i];
    if (names.size() > max_names) os << ", ...";
    os << ")";
  };
  part("missing", missing);
  part("unexpected", unexpected);
  part("shape-mismatched", mismatched);
  return os.str();
}

LoadReport load_state_dict(torch::nn::Module& module, const StateDict& state, bool strict, const std::string& source) {
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) targets.emplace(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) targets.emplace(b.key(), b.value());
  LoadReport report;
  std::map<std::string, bool> seen;
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : state) {
    auto it = targets.find(name);
    if (it == targets.end()) {
      report.unexpected.push_back(name);
      continue;
    }
    seen[name] = true;
    if (it->second.sizes() != t.sizes()) {
      std::ostringstream os;
      os << name << ": file " << t.sizes() << " vs model " << it->second.sizes();
      report.mismatched.push_back(os.str());
      continue;
    }
    it->second.copy_(t);
  }
  for (const auto& [name, t] : targets)
    if (!seen.count(name)) report.missing.push_back(name);
  MPQ_CHECK(!strict || report.clean(), source, ": does not match the model: ", report.summary(),
            " (a checkpoint of another architecture?)");
  return report;
}

namespace {

// The pickler writes typed lists (int, float, bool, tensor) as calls of
// torch.jit._pickle.build_*list, which torch.load's weights_only=True refuses;
// as generic lists they are plain pickle lists. Dicts are rebuilt with their
// values made plain too.
c10::IValue plain(const c10::IValue& v) {
  if (v.isList()) {
    c10::impl::GenericList out(c10::AnyType::get());
    for (const c10::IValue& e : v.toListRef()) out.push_back(plain(e));
    return out;
  }
  if (v.isGenericDict()) {
    const auto in = v.toGenericDict();
    c10::impl::GenericDict out(in.keyType(), c10::AnyType::get());
    for (const auto& e : in) out.insert(e.key(), plain(e.value()));
    return out;
  }
  return v;
}

}  // namespace

void save_checkpoint(const std::string& path, const StateDict& tensors,
                     const std::vector<std::pair<std::string, c10::IValue>>& metadata) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [k, v] : metadata) dict.insert(k, plain(v));
  for (const auto& [k, t] : tensors) dict.insert(k, t.detach().cpu().contiguous());
  // torch.save's zip archive, with plain (untagged) dicts and lists:
  // torch::pickle_save wraps each typed container in
  // torch.jit._pickle.restore_type_tag, which torch.load's default
  // weights_only=True (torch >= 2.6) refuses to call.
  std::vector<char> pickled;
  torch::jit::Pickler pickler([&](const char* buf, size_t n) { pickled.insert(pickled.end(), buf, buf + n); },
                              nullptr, nullptr, nullptr, nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(c10::IValue(dict));
  pickler.stop();
  std::string bytes;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* buf, size_t n) -> size_t {
      bytes.append(static_cast<const char*>(buf), n);
      return n;
    });
    torch::jit::writeArchiveAndTensors("data", pickled.data(), pickled.size(), pickler.tensorData(), writer);
    writer.writeEndOfFile();
  }
  io::write_file_atomic(path, bytes);
}

}  // namespace mpq::torchio
