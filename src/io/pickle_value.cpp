// mpq::pickle::Value: constructors, checked accessors and repr.
#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "mpq/common/error.h"
#include "mpq/io/pickle.h"

namespace mpq::pickle {

Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.b_ = b;
  return v;
}
Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.i_ = i;
  return v;
}
Value Value::floating(double f) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.f_ = f;
  return v;
}
Value Value::str(std::string s) {
  Value v;
  v.kind_ = Kind::kStr;
  v.s_ = std::make_shared<std::string>(std::move(s));
  return v;
}
Value Value::bytes(std::string b) {
  Value v = str(std::move(b));
  v.kind_ = Kind::kBytes;
  return v;
}

static uint32_t height_of(const List& items) {
  uint32_t h = 0;
  for (const auto& x : items) h = std::max(h, x.height() + (x.is_container() ? 1u : 0u));
  return h;
}

Value Value::list(List items) {
  Value v;
  v.kind_ = Kind::kList;
  v.node_ = std::make_shared<Node>();
  v.node_->height = height_of(items);
  v.node_->items = std::move(items);
  return v;
}
Value Value::tuple(List items) {
  Value v = list(std::move(items));
  v.kind_ = Kind::kTuple;
  return v;
}
Value Value::set(List items) {
  Value v = list(std::move(items));
  v.kind_ = Kind::kSet;
  return v;
}
Value Value::dict(DictItems items) {
  Value v;
  v.kind_ = Kind::kDict;
  v.node_ = std::make_shared<Node>();
  uint32_t h = 0;
  for (const auto& [k, x] : items) {
    h = std::max(h, k.height() + (k.is_container() ? 1u : 0u));
    h = std::max(h, x.height() + (x.is_container() ? 1u : 0u));
  }
  v.node_->height = h;
  v.node_->entries = std::move(items);
  return v;
}
Value Value::global(std::string module, std::string name) {
  Value v;
  v.kind_ = Kind::kGlobal;
  v.s_ = std::make_shared<std::string>(std::move(module));
  v.s2_ = std::make_shared<std::string>(std::move(name));
  return v;
}
Value Value::object(std::string module, std::string name, List args) {
  Value v = list(std::move(args));
  v.kind_ = Kind::kObject;
  v.node_->module = std::move(module);
  v.node_->name = std::move(name);
  return v;
}
Value Value::opaque(std::shared_ptr<void> ptr, std::string type_name) {
  Value v;
  v.kind_ = Kind::kOpaque;
  v.opaque_ = std::move(ptr);
  v.s2_ = std::make_shared<std::string>(std::move(type_name));
  return v;
}

const char* Value::kind_name() const {
  switch (kind_) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kStr: return "str";
    case Kind::kBytes: return "bytes";
    case Kind::kList: return "list";
    case Kind::kTuple: return "tuple";
    case Kind::kSet: return "set";
    case Kind::kDict: return "dict";
    case Kind::kGlobal: return "code reference (mpq runs no code from a pickle)";
    case Kind::kObject: return "code call (mpq runs no code from a pickle)";
    case Kind::kOpaque: return "opaque";
  }
  return "?";
}

namespace {
[[noreturn]] void wrong_kind(const Value& v, const char* expected) {
  throw InputError(detail::concat("expected ", expected, ", found ", v.kind_name(), " ", v.repr(60)));
}
}  // namespace

bool Value::as_bool() const {
  if (kind_ != Kind::kBool) wrong_kind(*this, "bool");
  return b_;
}
int64_t Value::as_int() const {
  if (kind_ == Kind::kBool) return b_ ? 1 : 0;
  if (kind_ != Kind::kInt) wrong_kind(*this, "int");
  return i_;
}
double Value::as_double() const {
  switch (kind_) {
    case Kind::kFloat: return f_;
    case Kind::kInt: return static_cast<double>(i_);
    case Kind::kBool: return b_ ? 1.0 : 0.0;
    default: wrong_kind(*this, "a number");
  }
}
const std::string& Value::as_str() const {
  if (kind_ != Kind::kStr) wrong_kind(*this, "str");
  return *s_;
}
const std::string& Value::as_bytes() const {
  if (kind_ != Kind::kBytes) wrong_kind(*this, "bytes");
  return *s_;
}
List& Value::items() const {
  if (kind_ != Kind::kList && kind_ != Kind::kTuple && kind_ != Kind::kSet && kind_ != Kind::kObject)
    wrong_kind(*this, "list or tuple");
  return node_->items;
}
DictItems& Value::dict_items() const {
  if (kind_ != Kind::kDict) wrong_kind(*this, "dict");
  return node_->entries;
}
const std::string& Value::global_module() const {
  if (kind_ == Kind::kObject) return node_->module;
  if (kind_ != Kind::kGlobal) wrong_kind(*this, "global");
  return *s_;
}
const std::string& Value::global_name() const {
  if (kind_ == Kind::kObject) return node_->name;
  if (kind_ != Kind::kGlobal) wrong_kind(*this, "global");
  return *s2_;
}
Value& Value::object_state() const {
  if (kind_ != Kind::kObject) wrong_kind(*this, "object");
  return node_->state;
}
const std::string& Value::opaque_type() const {
  if (kind_ != Kind::kOpaque) wrong_kind(*this, "opaque");
  return *s2_;
}
std::shared_ptr<void> Value::opaque_ptr() const {
  if (kind_ != Kind::kOpaque) wrong_kind(*this, "opaque");
  return opaque_;
}

const Value* Value::find(std::string_view key) const {
  if (kind_ != Kind::kDict) return nullptr;
  const auto& e = node_->entries;
  for (auto it = e.rbegin(); it != e.rend(); ++it)
    if (it->first.kind_ == Kind::kStr && *it->first.s_ == key) return &it->second;
  return nullptr;
}

uint32_t Value::height() const { return node_ ? node_->height : 0; }

namespace {

void quote(std::string& out, const std::string& s, char q) {
  out += q;
  for (unsigned char c : s) {
    if (c == '\\' || c == static_cast<unsigned char>(q)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += q;
}

// Appends a repr of v, stopping once out passes max_len.
void repr_into(std::string& out, const Value& v, size_t max_len) {
  if (out.size() > max_len) return;
  char buf[64];
  auto seq = [&](const List& items, const char* open, const char* close) {
    out += open;
    for (size_t i = 0; i < items.size() && out.size() <= max_len; ++i) {
      if (i) out += ", ";
      repr_into(out, items[i], max_len);
    }
    out += close;
  };
  switch (v.kind()) {
    case Value::Kind::kNone: out += "None"; break;
    case Value::Kind::kBool: out += v.as_bool() ? "True" : "False"; break;
    case Value::Kind::kInt:
      std::snprintf(buf, sizeof buf, "%" PRId64, v.as_int());
      out += buf;
      break;
    case Value::Kind::kFloat:
      std::snprintf(buf, sizeof buf, "%.17g", v.as_double());
      out += buf;
      break;
    case Value::Kind::kStr: quote(out, v.as_str(), '\''); break;
    case Value::Kind::kBytes:
      out += 'b';
      quote(out, v.as_bytes(), '\'');
      break;
    case Value::Kind::kList: seq(v.items(), "[", "]"); break;
    case Value::Kind::kTuple: seq(v.items(), "(", ")"); break;
    case Value::Kind::kSet: seq(v.items(), "{", "}"); break;
    case Value::Kind::kDict: {
      out += '{';
      const auto& e = v.dict_items();
      for (size_t i = 0; i < e.size() && out.size() <= max_len; ++i) {
        if (i) out += ", ";
        repr_into(out, e[i].first, max_len);
        out += ": ";
        repr_into(out, e[i].second, max_len);
      }
      out += '}';
      break;
    }
    case Value::Kind::kGlobal: out += v.global_module() + "." + v.global_name(); break;
    case Value::Kind::kObject:
      out += v.global_module() + "." + v.global_name();
      seq(v.items(), "(", ")");
      break;
    case Value::Kind::kOpaque: out += "<" + v.opaque_type() + ">"; break;
  }
}

}  // namespace

std::string Value::repr(size_t max_len) const {
  std::string out;
  repr_into(out, *this, max_len);
  if (out.size() > max_len) {
    out.resize(max_len);
    out += "...";
  }
  return out;
}

}  // namespace mpq::pickle
