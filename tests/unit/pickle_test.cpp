// The pickle reader against Python's own output (protocols 0-5, bytes made
// by CPython 3.11 and embedded here), the golden indicator files, the writer
// round trip, and malformed input: every truncation and corruption is an
// InputError, never a crash.
#include <gtest/gtest.h>

#include <random>

#include "mpq/common/error.h"
#include "mpq/io/indicators.h"
#include "mpq/io/pickle.h"
#include "test_util.h"

using mpq::InputError;
using mpq::pickle::Value;
using K = mpq::pickle::Value::Kind;

namespace {

// pickle.dumps(obj, protocol=P) for
//   obj = {'a': [1, -1, 255, 256, 65535, 65536, -2**31, 2**31, 2**40, -2**63, 2**63-1],
//          'f': [0.5, -1.25e-300, inf], 't': (1, 'x', None, True, False), 's': 'h\u00e9llo',
//          'b': b'\x00\x01', 'n': None, 'e': [], 'd': {}, 'tt': (), 't1': (1,), 't2': (1, 2),
//          't3': (1, 2, 3), 'shared': (shared, shared)}   with shared = [1, 2]
const char* kProto[6] = {
    "286470300a56610a70310a286c70320a49310a61492d310a61493235350a61493235360a614936353533350a614936353533360a61492d323134373438333634380a614c323134373438333634384c0a614c313039393531313632373737364c0a614c2d393232333337323033363835343737353830384c0a614c393232333337323033363835343737353830374c0a617356660a70330a286c70340a46302e350a61462d312e3235652d3330300a6146696e660a617356740a70350a2849310a56780a70360a4e4930310a4930300a7470370a7356730a70380a5668e96c6c6f0a70390a7356620a7031300a635f636f646563730a656e636f64650a7031310a28565c7530303030010a7031320a566c6174696e310a7031330a747031340a527031350a73566e0a7031360a4e7356650a7031370a286c7031380a7356640a7031390a28647032300a735674740a7032310a2874735674310a7032320a2849310a747032330a735674320a7032340a2849310a49320a747032350a735674330a7032360a2849310a49320a49330a747032370a73567368617265640a7032380a28286c7032390a49310a6149320a616732390a747033300a732e",
    "7d71002858010000006171015d7102284b014affffffff4bff4d00014dffff4a000001004a000000804c323134373438333634384c0a4c313039393531313632373737364c0a4c2d393232333337323033363835343737353830384c0a4c393232333337323033363835343737353830374c0a6558010000006671035d710428473fe00000000000004781aac9a7b3b7302f477ff0000000000000655801000000747105284b0158010000007871064e4930310a4930300a7471075801000000737108580600000068c3a96c6c6f7109580100000062710a635f636f646563730a656e636f64650a710b2858020000000001710c58060000006c6174696e31710d74710e52710f58010000006e71104e58010000006571115d711258010000006471137d711458020000007474711529580200000074317116284b01747117580200000074327118284b014b0274711958020000007433711a284b014b024b0374711b5806000000736861726564711c285d711d284b014b0265681d74711e752e",
    "80027d71002858010000006171015d7102284b014affffffff4bff4d00014dffff4a000001004a000000808a0500000080008a060000000000018a0800000000000000808a08ffffffffffffff7f6558010000006671035d710428473fe00000000000004781aac9a7b3b7302f477ff0000000000000655801000000747105284b0158010000007871064e88897471075801000000737108580600000068c3a96c6c6f7109580100000062710a635f636f646563730a656e636f64650a710b58020000000001710c58060000006c6174696e31710d86710e52710f58010000006e71104e58010000006571115d711258010000006471137d7114580200000074747115295802000000743171164b018571175802000000743271184b014b0286711958020000007433711a4b014b024b0387711b5806000000736861726564711c5d711d284b014b0265681d86711e752e",
    "80037d71002858010000006171015d7102284b014affffffff4bff4d00014dffff4a000001004a000000808a0500000080008a060000000000018a0800000000000000808a08ffffffffffffff7f6558010000006671035d710428473fe00000000000004781aac9a7b3b7302f477ff0000000000000655801000000747105284b0158010000007871064e88897471075801000000737108580600000068c3a96c6c6f7109580100000062710a43020001710b58010000006e710c4e580100000065710d5d710e580100000064710f7d7110580200000074747111295802000000743171124b018571135802000000743271144b014b028671155802000000743371164b014b024b03877117580600000073686172656471185d7119284b014b0265681986711a752e",
    "800495df000000000000007d94288c0161945d94284b014affffffff4bff4d00014dffff4a000001004a000000808a0500000080008a060000000000018a0800000000000000808a08ffffffffffffff7f658c0166945d9428473fe00000000000004781aac9a7b3b7302f477ff0000000000000658c017494284b018c0178944e888974948c0173948c0668c3a96c6c6f948c01629443020001948c016e944e8c0165945d948c0164947d948c02747494298c027431944b0185948c027432944b014b0286948c027433944b014b024b0387948c06736861726564945d94284b014b026568198694752e",
    "800595df000000000000007d94288c0161945d94284b014affffffff4bff4d00014dffff4a000001004a000000808a0500000080008a060000000000018a0800000000000000808a08ffffffffffffff7f658c0166945d9428473fe00000000000004781aac9a7b3b7302f477ff0000000000000658c017494284b018c0178944e888974948c0173948c0668c3a96c6c6f948c01629443020001948c016e944e8c0165945d948c0164947d948c02747494298c027431944b0185948c027432944b014b0286948c027433944b014b024b0387948c06736861726564945d94284b014b026568198694752e",
};

void check_sample(const Value& v, int proto) {
  SCOPED_TRACE("protocol " + std::to_string(proto));
  ASSERT_EQ(v.kind(), K::kDict);
  const auto& a = v.find("a")->items();
  const std::vector<int64_t> ints = {1, -1, 255, 256, 65535, 65536, INT32_MIN, 2147483648LL, 1LL << 40, INT64_MIN, INT64_MAX};
  ASSERT_EQ(a.size(), ints.size());
  for (size_t i = 0; i < ints.size(); ++i) EXPECT_EQ(a[i].as_int(), ints[i]) << i;
  const auto& f = v.find("f")->items();
  EXPECT_EQ(f[0].as_double(), 0.5);
  EXPECT_EQ(f[1].as_double(), -1.25e-300);
  EXPECT_TRUE(std::isinf(f[2].as_double()));
  const Value& t = *v.find("t");
  EXPECT_EQ(t.kind(), K::kTuple);
  EXPECT_EQ(t.items()[1].as_str(), "x");
  EXPECT_TRUE(t.items()[2].is_none());
  EXPECT_TRUE(t.items()[3].as_bool());
  EXPECT_FALSE(t.items()[4].as_bool());
  EXPECT_EQ(v.find("s")->as_str(), "h\xc3\xa9llo");
  EXPECT_EQ(v.find("b")->as_bytes(), std::string("\x00\x01", 2));
  EXPECT_TRUE(v.find("n")->is_none());
  EXPECT_TRUE(v.find("e")->items().empty());
  EXPECT_TRUE(v.find("d")->dict_items().empty());
  EXPECT_TRUE(v.find("tt")->items().empty());
  EXPECT_EQ(v.find("t3")->items()[2].as_int(), 3);
  const auto& sh = v.find("shared")->items();
  ASSERT_EQ(sh.size(), 2u);
  EXPECT_EQ(sh[1].items()[1].as_int(), 2);
  EXPECT_EQ(&sh[0].items(), &sh[1].items()) << "the memo must share one list, as Python does";
}

}  // namespace

TEST(Pickle, ReadsEveryProtocolAsPythonWritesIt) {
  for (int p = 0; p <= 5; ++p) check_sample(mpq::pickle::read(mpq::test::from_hex(kProto[p])), p);
}

TEST(Pickle, SetsFrozensetsAndOrderedDict) {
  // pickle.dumps({'s': {1, 2}, 'fs': frozenset([3])}, protocol=4)
  const Value s = mpq::pickle::read(mpq::test::from_hex(
      "8004951b000000000000007d94288c0173948f94284b014b02908c02667394284b039194752e"));
  EXPECT_EQ(s.find("s")->kind(), K::kSet);
  EXPECT_EQ(s.find("s")->items().size(), 2u);
  EXPECT_EQ(s.find("fs")->items()[0].as_int(), 3);
  // pickle.dumps(OrderedDict([('w', 1.5), ('b', 2)]), protocol=2): a dict, order kept.
  const Value od = mpq::pickle::read(mpq::test::from_hex(
      "800263636f6c6c656374696f6e730a4f726465726564446963740a710029527101285801000000777102473ff800000000000058010000006271034b02752e"));
  ASSERT_EQ(od.kind(), K::kDict);
  EXPECT_EQ(od.dict_items()[0].first.as_str(), "w");
  EXPECT_EQ(od.find("w")->as_double(), 1.5);
  EXPECT_EQ(od.find("b")->as_int(), 2);
}

TEST(Pickle, ReadsThePapersIndicatorFile) {
  MPQ_NEEDS_GOLDEN();
  const Value v = mpq::pickle::read_file(mpq::test::golden("importance_indicators_resnet50.pkl"));
  const auto& names = v.find("layer_name")->items();
  ASSERT_EQ(names.size(), 52u);
  EXPECT_EQ(names[0].as_str(), "module.layer1.0.conv1");
  const Value* w = v.find("weight")->find("module.layer1.0.conv1");
  ASSERT_NE(w, nullptr);
  EXPECT_DOUBLE_EQ(w->find("6")->as_double(), 0.022435298189520836);
  EXPECT_DOUBLE_EQ(v.find("act")->find("module.layer1.0.conv2")->find("2")->as_double(), 0.12441301345825195);
}

TEST(Pickle, WriterRoundTrips) {
  using mpq::pickle::DictItems;
  using mpq::pickle::List;
  DictItems items;
  items.emplace_back(Value::str("ints"), Value::list({Value::integer(0), Value::integer(-5), Value::integer(300),
                                                      Value::integer(INT64_MIN), Value::integer(INT64_MAX)}));
  items.emplace_back(Value::str("float"), Value::floating(-0.1));
  items.emplace_back(Value::str("long"), Value::str(std::string(300, 'x')));
  items.emplace_back(Value::str("bytes"), Value::bytes(std::string("\0\xff", 2)));
  items.emplace_back(Value::str("tuple"), Value::tuple({Value(), Value::boolean(true)}));
  items.emplace_back(Value::str("set"), Value::set({Value::integer(7)}));
  List many;
  for (int i = 0; i < 2500; ++i) many.push_back(Value::integer(i));  // several APPENDS batches
  items.emplace_back(Value::str("many"), Value::list(many));
  const Value back = mpq::pickle::read(mpq::pickle::write(Value::dict(items)));
  EXPECT_EQ(back.find("ints")->items()[3].as_int(), INT64_MIN);
  EXPECT_EQ(back.find("ints")->items()[4].as_int(), INT64_MAX);
  EXPECT_EQ(back.find("float")->as_double(), -0.1);
  EXPECT_EQ(back.find("long")->as_str().size(), 300u);
  EXPECT_EQ(back.find("bytes")->as_bytes(), std::string("\0\xff", 2));
  EXPECT_TRUE(back.find("tuple")->items()[1].as_bool());
  EXPECT_EQ(back.find("set")->kind(), K::kSet);
  EXPECT_EQ(back.find("many")->items()[2499].as_int(), 2499);
}

TEST(Pickle, PythonReadsWhatTheWriterWrites) {
  if (std::system("python3 -c 'import pickle' >/dev/null 2>&1") != 0) GTEST_SKIP() << "python3 is not installed";
  mpq::test::TempDir dir;
  mpq::io::Indicators ind;
  ind.layer_names = {"conv2", "conv3"};
  ind.weight = {{{4, 0.5}, {2, 1.5}}, {{4, 0.25}, {2, 0.75}}};
  ind.act = {{{4, 2.0}, {2, 3.0}}, {{4, 1.0}, {2, 1.25}}};
  const std::string path = dir.file("ind.pkl");
  mpq::io::save_indicators(path, ind);
  const std::string cmd = "python3 -c \"import pickle; d = pickle.load(open('" + path +
                          "', 'rb')); assert d['layer_name'] == ['module.conv2', 'module.conv3'], d; "
                          "assert d['weight']['module.conv3'] == {'4': 0.25, '2': 0.75}, d; "
                          "assert list(d['act']['module.conv2'].keys()) == ['4', '2']\"";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
}

TEST(Pickle, EveryTruncationIsAnError) {
  MPQ_NEEDS_GOLDEN();
  const std::string data = mpq::test::read_all(mpq::test::golden("importance_indicators_resnet50.pkl"));
  for (size_t n = 0; n < data.size(); ++n) {
    try {
      mpq::pickle::ReadOptions opt;
      opt.source = "x.pkl";
      mpq::pickle::read(std::string_view(data).substr(0, n), opt);
      ADD_FAILURE() << "a prefix of " << n << " bytes was accepted";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("x.pkl: not a valid pickle", 0), 0u) << e.what();
    }
  }
}

TEST(Pickle, CorruptBytesNeverCrash) {
  MPQ_NEEDS_GOLDEN();
  const std::string data = mpq::test::read_all(mpq::test::golden("importance_indicators_resnet50.pkl"));
  std::mt19937 rng(7);
  int errors = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string d = data;
    for (int k = 0; k < 1 + trial % 4; ++k) d[rng() % d.size()] = static_cast<char>(rng());
    try {
      mpq::pickle::read(d);
    } catch (const InputError&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
}

TEST(Pickle, RefusesRecursionAndDeepNesting) {
  // l = []; l.append(l): EMPTY_LIST MEMOIZE MARK BINGET 0 APPENDS STOP, as Python writes it.
  EXPECT_THROW(mpq::pickle::read(mpq::test::from_hex("80045d9428680065" "2e")), InputError);
  std::string deep = "\x80\x04";
  for (int i = 0; i < 2000; ++i) deep += "]";
  for (int i = 0; i < 1999; ++i) deep += "a";
  deep += ".";
  try {
    mpq::pickle::read(deep);
    FAIL() << "2000 nested lists were accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("nest deeper than 1000"), std::string::npos) << e.what();
  }
}

TEST(Pickle, FuzzerFindings) {
  // An object built with itself as state: was a reference cycle (a leak).
  const std::string leak = mpq::test::from_hex(
      "8004958f01000000000094285d5d8c008c00933232328004958f01850000000094285d5d8c008c009332858185748132958032854b05"
      "190010620000859bff60");
  EXPECT_THROW(mpq::pickle::read(leak), InputError);
  // The smallest form: NEWOBJ, DUP, BUILD.
  EXPECT_THROW(mpq::pickle::read(mpq::test::from_hex("80048c01618c016293" "29" "81" "32" "62" "2e")), InputError);
}

TEST(Pickle, ErrorsSayWhatWasFound) {
  auto message = [](const std::string& bytes) {
    try {
      mpq::pickle::ReadOptions opt;
      opt.source = "f.pkl";
      mpq::pickle::read(bytes, opt);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message(""), "f.pkl: not a valid pickle: truncated: needs 1 more bytes, 0 left (at byte 0)");
  EXPECT_EQ(message("\x80\x09."), "f.pkl: not a valid pickle: protocol 9 is newer than 5 (at byte 0)");
  EXPECT_EQ(message("\x80\x02\xff."), "f.pkl: not a valid pickle: unknown or unsupported opcode 0xff (at byte 2)");
  EXPECT_EQ(message("\x80\x02K\x01K\x02."), "f.pkl: not a valid pickle: STOP with 2 values on the stack (expected 1) (at byte 6)");
  EXPECT_NE(message("\x80\x02K\x01Q.").find("persistent id 1 needs a loader"), std::string::npos);
}

// A libFuzzer leak artifact (an object built with itself as its state, in a
// truncated frame): refused with an error, no leak, no crash.
TEST(Pickle, FuzzLeakArtifactIsRefused) {
  const std::string bytes = mpq::test::from_hex(
      "8004958f01000000000094285d5d8c008c00933232328004958f01850000000094285d5d8c008c00933285818574813295803285"
      "4b05190010620000859bff60");
  EXPECT_THROW(mpq::pickle::read(bytes), mpq::Error);
}
