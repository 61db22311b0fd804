// The pickle virtual machine (protocols 0-5), bounded and checked.
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "mpq/common/error.h"
#include "mpq/io/pickle.h"

namespace mpq::pickle {

Value PickleHooks::find_class(const std::string& module, const std::string& name) {
  return Value::global(module, name);
}

Value PickleHooks::call_reduce(const Value& callable, const List& args) {
  const auto& m = callable.global_module();
  const auto& n = callable.global_name();
  if (m == "_codecs" && n == "encode" && args.size() == 2 && args[0].kind() == Value::Kind::kStr &&
      args[1].kind() == Value::Kind::kStr && args[1].as_str() == "latin1") {
    // Protocols 0-2 write bytes as _codecs.encode(text, 'latin1'): UTF-8 text
    // whose code points are the byte values.
    const std::string& u = args[0].as_str();
    std::string out;
    for (size_t i = 0; i < u.size(); ++i) {
      const auto c = static_cast<unsigned char>(u[i]);
      if (c < 0x80) {
        out += static_cast<char>(c);
      } else if ((c & 0xe0) == 0xc0 && i + 1 < u.size()) {
        out += static_cast<char>(((c & 0x1f) << 6) | (static_cast<unsigned char>(u[++i]) & 0x3f));
      } else {
        throw InputError("_codecs.encode: a byte string with a code point above 255");
      }
    }
    return Value::bytes(std::move(out));
  }
  if (m == "collections" && n == "OrderedDict") {
    MPQ_CHECK(args.empty() || (args.size() == 1 && args[0].kind() == Value::Kind::kList && args[0].items().empty()),
              "collections.OrderedDict called with unexpected arguments");
    return Value::dict();
  }
  return Value::object(m, n, args);
}

Value PickleHooks::build(const Value& obj, const Value& state) {
  if (obj.kind() == Value::Kind::kObject) {
    obj.object_state() = state;
    return obj;
  }
  if (obj.kind() == Value::Kind::kDict) return obj;  // an OrderedDict's attributes (_metadata)
  throw InputError(detail::concat("BUILD on a ", obj.kind_name(), " is not supported"));
}

Value PickleHooks::persistent_load(const Value& pid) {
  throw InputError(detail::concat("persistent id ", pid.repr(80),
                                  " needs a loader for it (is this a PyTorch checkpoint? use the torch commands)"));
}

class Reader {
 public:
  Reader(std::string_view data, const ReadOptions& opt) : data_(data), opt_(opt) {
    hooks_ = opt.hooks ? opt.hooks : &default_hooks_;
  }

  Value run() {
    for (;;) {
      op_pos_ = pos_;
      const uint8_t op = u8();
      if (op == '.') {  // STOP
        if (stack_.size() != 1 || !marks_.empty()) fail("STOP with ", stack_.size(), " values on the stack (expected 1)");
        return stack_.back();
      }
      step(op);
    }
  }

 private:
  template <typename... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    throw InputError(detail::concat(opt_.source, ": not a valid pickle: ", std::forward<Parts>(parts)...,
                                    " (at byte ", op_pos_, ")"));
  }

  // --- raw input --------------------------------------------------------
  void need(uint64_t n) const {
    if (n > data_.size() - pos_) fail("truncated: needs ", n, " more bytes, ", data_.size() - pos_, " left");
  }
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(data_[pos_++]);
  }
  uint64_t uint_le(int n) {
    need(n);
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(data_[pos_ + i]);
    pos_ += n;
    return v;
  }
  std::string bytes(uint64_t n) {
    need(n);
    std::string s(data_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  std::string line() {
    const size_t end = data_.find('\n', pos_);
    if (end == std::string_view::npos) fail("truncated: a text argument has no end of line");
    std::string s(data_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return s;
  }

  // --- stack --------------------------------------------------------------
  void push(Value v) { stack_.push_back(std::move(v)); }
  Value pop() {
    if (stack_.size() <= floor()) fail("stack underflow");
    Value v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  Value& top() {
    if (stack_.size() <= floor()) fail("stack underflow");
    return stack_.back();
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  // Pops everything above the last MARK, and the mark.
  List pop_mark() {
    if (marks_.empty()) fail("no MARK on the stack");
    const size_t m = marks_.back();
    marks_.pop_back();
    List items(std::make_move_iterator(stack_.begin() + m), std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return items;
  }

  // Records that `child` is now inside `parent`, enforcing a tree of bounded height.
  void adopt(const Value& parent, const Value& child) {
    if (parent.node_->sealed) fail("a ", parent.kind_name(), " is changed after being put inside another value (recursive structures are not supported)");
    if (!child.node_) return;
    if (child.node_ == parent.node_) fail("a ", parent.kind_name(), " contains itself (recursive structures are not supported)");
    child.node_->sealed = true;
    const uint32_t h = child.node_->height + 1;
    if (h > opt_.max_depth) fail("values nest deeper than ", opt_.max_depth, " levels");
    parent.node_->height = std::max(parent.node_->height, h);
  }
  Value make_seq(Value v) {
    for (const auto& x : v.node_->items) adopt(v, x);
    return v;
  }
  void append(const Value& target, Value x) {
    if (target.kind() != Value::Kind::kList) fail("APPEND to a ", target.kind_name());
    adopt(target, x);
    target.node_->items.push_back(std::move(x));
  }
  void set_item(const Value& target, Value k, Value x) {
    if (target.kind() != Value::Kind::kDict) fail("SETITEM on a ", target.kind_name());
    adopt(target, k);
    adopt(target, x);
    target.node_->entries.emplace_back(std::move(k), std::move(x));
  }

  // --- memo ---------------------------------------------------------------
  void memo_put(uint64_t idx) {
    if (stack_.empty()) fail("memo store with an empty stack");
    memo_[idx] = stack_.back();
  }
  void memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) fail("memo key ", idx, " was never stored");
    push(it->second);
  }

  // --- objects ------------------------------------------------------------
  Value checked(Value v) {
    if (v.node_ && v.node_->height > opt_.max_depth) fail("values nest deeper than ", opt_.max_depth, " levels");
    return v;
  }
  Value find_class(const std::string& module, const std::string& name) {
    return checked(hooks_->find_class(module, name));
  }
  Value reduce(const Value& callable, const Value& args) {
    if (callable.kind() != Value::Kind::kGlobal) fail("call of a ", callable.kind_name(), " (expected a class or function)");
    if (args.kind() != Value::Kind::kTuple) fail("call with ", args.kind_name(), " arguments (expected a tuple)");
    if (args.node_) args.node_->sealed = true;
    return checked(hooks_->call_reduce(callable, args.items()));
  }

  int64_t parse_int_text(const std::string& s) {
    std::string t = s;
    if (!t.empty() && t.back() == 'L') t.pop_back();
    if (t.empty()) fail("empty integer");
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(t.c_str(), &end, 10);
    if (errno == ERANGE) fail("integer ", t, " does not fit in 64 bits");
    if (*end != '\0') fail("malformed integer '", t, "'");
    return v;
  }
  Value long_bytes(uint64_t n) {
    if (n > 8) fail("integer of ", n, " bytes does not fit in 64 bits");
    need(n);
    uint64_t v = 0;
    for (uint64_t i = 0; i < n; ++i) v |= uint64_t(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    if (n > 0 && n < 8 && (static_cast<uint8_t>(data_[pos_ + n - 1]) & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
    pos_ += n;
    return Value::integer(static_cast<int64_t>(v));
  }
  std::string string_literal(const std::string& s) {
    // Protocol-0 STRING: a Python repr in quotes; escapes other than the
    // common ones are rare in numeric data and rejected.
    if (s.size() < 2 || s.front() != s.back() || (s.front() != '\'' && s.front() != '"')) fail("malformed STRING argument");
    std::string out;
    for (size_t i = 1; i + 1 < s.size(); ++i) {
      if (s[i] != '\\') {
        out += s[i];
        continue;
      }
      if (++i + 1 >= s.size()) fail("malformed escape in STRING");
      switch (s[i]) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'x': {
          if (i + 3 > s.size() - 1) fail("malformed escape in STRING");
          out += static_cast<char>(std::strtol(s.substr(i + 1, 2).c_str(), nullptr, 16));
          i += 2;
          break;
        }
        default: fail("unsupported escape \\", s[i], " in STRING");
      }
    }
    return out;
  }

  static void put_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  // Protocol-0 UNICODE: latin-1 bytes with \uXXXX and \UXXXXXXXX escapes.
  std::string raw_unicode_escape(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      const auto c = static_cast<unsigned char>(s[i]);
      if (c == '\\' && i + 1 < s.size() && (s[i + 1] == 'u' || s[i + 1] == 'U')) {
        const size_t n = s[i + 1] == 'u' ? 4 : 8;
        if (i + 2 + n > s.size()) fail("malformed \\u escape in UNICODE");
        uint32_t cp = 0;
        for (size_t k = 0; k < n; ++k) {
          const char h = s[i + 2 + k];
          if (!std::isxdigit(static_cast<unsigned char>(h))) fail("malformed \\u escape in UNICODE");
          cp = cp * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
        }
        if (cp > 0x10ffff) fail("code point out of range in UNICODE");
        put_utf8(out, cp);
        i += 1 + n;
      } else {
        put_utf8(out, c);
      }
    }
    return out;
  }

  void step(uint8_t op) {
    switch (op) {
      case 0x80: {  // PROTO
        const uint8_t p = u8();
        if (p > 5) fail("protocol ", int(p), " is newer than 5");
        break;
      }
      case 0x95: uint_le(8); break;  // FRAME: framing is only a read-ahead hint
      case '(': marks_.push_back(stack_.size()); break;
      case '0': pop(); break;
      case '1': pop_mark(); break;
      case '2': push(top()); break;
      // --- scalars
      case 'N': push(Value()); break;
      case 0x88: push(Value::boolean(true)); break;
      case 0x89: push(Value::boolean(false)); break;
      case 'J': push(Value::integer(static_cast<int32_t>(uint_le(4)))); break;
      case 'K': push(Value::integer(uint_le(1))); break;
      case 'M': push(Value::integer(uint_le(2))); break;
      case 0x8a: push(long_bytes(uint_le(1))); break;
      case 0x8b: push(long_bytes(uint_le(4))); break;
      case 'I': {
        const std::string s = line();
        if (s == "00") push(Value::boolean(false));
        else if (s == "01") push(Value::boolean(true));
        else push(Value::integer(parse_int_text(s)));
        break;
      }
      case 'L': push(Value::integer(parse_int_text(line()))); break;
      case 'G': {
        const uint64_t bits = uint_le(8);
        uint64_t be = 0;  // BINFLOAT is big-endian
        for (int i = 0; i < 8; ++i) be = (be << 8) | ((bits >> (8 * i)) & 0xff);
        double d;
        std::memcpy(&d, &be, sizeof d);
        push(Value::floating(d));
        break;
      }
      case 'F': {
        const std::string s = line();
        char* end = nullptr;
        const double d = std::strtod(s.c_str(), &end);
        if (s.empty() || *end != '\0') fail("malformed float '", s, "'");
        push(Value::floating(d));
        break;
      }
      // --- strings and bytes
      case 0x8c: push(Value::str(bytes(uint_le(1)))); break;
      case 'X': push(Value::str(bytes(uint_le(4)))); break;
      case 0x8d: push(Value::str(bytes(uint_le(8)))); break;
      case 'V': push(Value::str(raw_unicode_escape(line()))); break;
      case 'C': push(Value::bytes(bytes(uint_le(1)))); break;
      case 'B': push(Value::bytes(bytes(uint_le(4)))); break;
      case 0x8e: push(Value::bytes(bytes(uint_le(8)))); break;
      case 0x96: push(Value::bytes(bytes(uint_le(8)))); break;  // BYTEARRAY8
      case 'U': push(Value::bytes(bytes(uint_le(1)))); break;  // py2 str as bytes
      case 'T': push(Value::bytes(bytes(uint_le(4)))); break;
      case 'S': push(Value::bytes(string_literal(line()))); break;
      // --- containers
      case ']': push(Value::list()); break;
      case ')': push(Value::tuple()); break;
      case '}': push(Value::dict()); break;
      case 0x8f: push(Value::set()); break;
      case 'l': push(make_seq(Value::list(pop_mark()))); break;
      case 't': push(make_seq(Value::tuple(pop_mark()))); break;
      case 0x91: push(make_seq(Value::set(pop_mark()))); break;
      case 0x85: case 0x86: case 0x87: {
        const size_t n = op - 0x84;
        if (stack_.size() < floor() + n) fail("stack underflow");
        List items(std::make_move_iterator(stack_.end() - n), std::make_move_iterator(stack_.end()));
        stack_.resize(stack_.size() - n);
        push(make_seq(Value::tuple(std::move(items))));
        break;
      }
      case 'd': {
        List items = pop_mark();
        if (items.size() % 2) fail("DICT with an odd number of items");
        Value d = Value::dict();
        for (size_t i = 0; i < items.size(); i += 2) set_item(d, std::move(items[i]), std::move(items[i + 1]));
        push(d);
        break;
      }
      case 'a': {
        Value x = pop();
        append(top(), std::move(x));
        break;
      }
      case 'e': {
        List items = pop_mark();
        const Value& target = top();
        for (auto& x : items) append(target, std::move(x));
        break;
      }
      case 's': {
        Value x = pop();
        Value k = pop();
        set_item(top(), std::move(k), std::move(x));
        break;
      }
      case 'u': {
        List items = pop_mark();
        if (items.size() % 2) fail("SETITEMS with an odd number of items");
        const Value& target = top();
        for (size_t i = 0; i < items.size(); i += 2) set_item(target, std::move(items[i]), std::move(items[i + 1]));
        break;
      }
      case 0x90: {  // ADDITEMS
        List items = pop_mark();
        const Value& target = top();
        if (target.kind() != Value::Kind::kSet) fail("ADDITEMS on a ", target.kind_name());
        for (auto& x : items) {
          adopt(target, x);
          target.node_->items.push_back(std::move(x));
        }
        break;
      }
      // --- memo
      case 0x94: memo_put(memo_.size()); break;
      case 'q': memo_put(uint_le(1)); break;
      case 'r': memo_put(uint_le(4)); break;
      case 'p': memo_put(static_cast<uint64_t>(parse_int_text(line()))); break;
      case 'h': memo_get(uint_le(1)); break;
      case 'j': memo_get(uint_le(4)); break;
      case 'g': memo_get(static_cast<uint64_t>(parse_int_text(line()))); break;
      // --- objects
      case 'c': {
        std::string module = line();
        std::string name = line();
        push(find_class(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        Value name = pop();
        Value module = pop();
        if (module.kind() != Value::Kind::kStr || name.kind() != Value::Kind::kStr) fail("STACK_GLOBAL needs two str");
        push(find_class(module.as_str(), name.as_str()));
        break;
      }
      case 'R': case 0x81: {  // REDUCE, NEWOBJ (cls.__new__(cls, *args) is a call for our purposes)
        Value args = pop();
        Value callable = pop();
        push(reduce(callable, args));
        break;
      }
      case 0x92: {  // NEWOBJ_EX: keyword arguments are not supported
        Value kwargs = pop();
        Value args = pop();
        Value callable = pop();
        if (kwargs.kind() != Value::Kind::kDict || !kwargs.dict_items().empty()) fail("NEWOBJ_EX with keyword arguments");
        push(reduce(callable, args));
        break;
      }
      case 'b': {
        Value state = pop();
        Value obj = pop();
        if (obj.node_ && obj.node_->sealed) fail("BUILD on a value already inside another");
        if (obj.node_ && obj.node_ == state.node_) fail("BUILD with an object as its own state (recursive structures are not supported)");
        if (state.node_) {
          const uint32_t h = state.node_->height + 1;
          if (h > opt_.max_depth) fail("values nest deeper than ", opt_.max_depth, " levels");
          state.node_->sealed = true;
          if (obj.node_) obj.node_->height = std::max(obj.node_->height, h);
        }
        push(checked(hooks_->build(obj, state)));
        break;
      }
      case 'Q': push(checked(hooks_->persistent_load(pop()))); break;
      case 'P': push(checked(hooks_->persistent_load(Value::str(line())))); break;
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "0x%02x", op);
        fail("unknown or unsupported opcode ", buf);
      }
    }
  }

  std::string_view data_;
  const ReadOptions& opt_;
  PickleHooks default_hooks_;
  PickleHooks* hooks_;
  size_t pos_ = 0, op_pos_ = 0;
  List stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value> memo_;
};

Value read(std::string_view data, const ReadOptions& options) {
  Reader r(data, options);
  try {
    return r.run();
  } catch (const InputError& e) {
    const std::string what = e.what();
    // Hook errors do not know the source: prefix it once.
    if (what.rfind(options.source + ":", 0) == 0) throw;
    throw InputError(options.source + ": " + what);
  }
}

Value read_file(const std::string& path, PickleHooks* hooks) {
  std::ifstream in(path, std::ios::binary);
  MPQ_CHECK(in.good(), path, ": cannot open (", std::strerror(errno), ")");
  std::ostringstream ss;
  ss << in.rdbuf();
  MPQ_CHECK(!in.bad(), path, ": read error");
  ReadOptions opt;
  opt.source = path;
  opt.hooks = hooks;
  return read(ss.str(), opt);
}

}  // namespace mpq::pickle
