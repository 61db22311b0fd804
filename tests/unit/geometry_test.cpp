// The zoo's torch-free geometry against ../shared/golden/geometry_224.json,
// and geometry files.
#include <gtest/gtest.h>

#include <yaml-cpp/yaml.h>

#include "mpq/common/error.h"
#include "mpq/search/geometry.h"
#include "test_util.h"

using namespace mpq::search;

TEST(Geometry, ZooEqualsTheGoldenTableAt224) {
  MPQ_NEEDS_GOLDEN();
  const YAML::Node golden = YAML::LoadFile(mpq::test::golden("geometry_224.json"));
  for (const char* model : {"resnet18", "resnet50", "mobilenetv1"}) {
    SCOPED_TRACE(model);
    const ModelGeometry g = zoo_geometry(model);
    const YAML::Node ref = golden[model];
    ASSERT_EQ(g.layers.size(), ref.size());
    for (size_t i = 0; i < g.layers.size(); ++i) {
      const auto& l = g.layers[i];
      const YAML::Node r = ref[i];
      SCOPED_TRACE(l.name);
      EXPECT_EQ(l.name, r["name"].as<std::string>());
      EXPECT_EQ(l.type, r["type"].as<std::string>());
      EXPECT_EQ(l.in, r["in"].as<int64_t>());
      EXPECT_EQ(l.out, r["out"].as<int64_t>());
      EXPECT_EQ(l.params, r["params"].as<int64_t>());
      EXPECT_EQ(l.macs, r["macs"].as<int64_t>());
      if (l.type == "conv") {
        EXPECT_EQ(l.kernel, r["kernel"].as<int>());
        EXPECT_EQ(l.stride, r["stride"].as<int>());
        EXPECT_EQ(l.groups, r["groups"].as<int>());
        EXPECT_EQ(l.in_h, r["in_hw"][0].as<int>());
        EXPECT_EQ(l.out_h, r["out_hw"][0].as<int>());
        EXPECT_EQ(l.out_w, r["out_hw"][1].as<int>());
      }
    }
  }
}

TEST(Geometry, SearchableLayersFollowSpec) {
  EXPECT_EQ(zoo_geometry("resnet50").searchable().size(), 52u);
  EXPECT_EQ(zoo_geometry("resnet18").searchable().size(), 19u);
  EXPECT_EQ(zoo_geometry("mobilenetv1").searchable().size(), 26u);
  const auto r20 = zoo_geometry("resnet20", {28, 28, 1, 10});
  EXPECT_EQ(r20.searchable().size(), 20u);  // 18 block convs + 2 projection shortcuts
  EXPECT_EQ(r20.layers.front().name, "conv1");
  EXPECT_FALSE(r20.layers.front().searchable);
  EXPECT_EQ(r20.layers.front().params, 16 * 1 * 9);
  EXPECT_EQ(r20.layers.back().name, "fc");
  EXPECT_EQ(r20.layers.back().params, 640);
  const auto names = zoo_geometry("resnet50").searchable_names();
  EXPECT_EQ(names[3], "layer1.0.downsample.0");
}

TEST(Geometry, OriginalMacCountOfStridedConvs) {
  // The original's hook does not floor (H + 2p - k) / s + 1: ResNet-50's conv1
  // counts 112.5^2 -> 12656 output positions.
  const auto g = zoo_geometry("resnet50");
  EXPECT_EQ(g.layers[0].macs, 118013952);
  EXPECT_EQ(g.layers[0].original_macs, 119067648);
  for (const auto& l : g.layers)
    if (l.stride == 1 || l.type == "linear") EXPECT_EQ(l.original_macs, l.macs) << l.name;
}

TEST(Geometry, OtherInputSizes) {
  const auto g = zoo_geometry("resnet18", {112, 112, 3, 10});
  EXPECT_EQ(g.layers[0].out_h, 56);
  EXPECT_EQ(g.layers.back().params, 5120);
  EXPECT_THROW(zoo_geometry("resnet50", {0, 0, 3, 10}), mpq::InputError);
  try {
    zoo_geometry("resnet51");
    FAIL();
  } catch (const mpq::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("known: resnet18, resnet50, mobilenetv1, resnet20"), std::string::npos);
  }
}

TEST(Geometry, FileRoundTripAndGoldenJson) {
  MPQ_NEEDS_GOLDEN();
  mpq::test::TempDir dir;
  const auto g = zoo_geometry("mobilenetv1");
  mpq::test::write_all(dir.file("g.yaml"), geometry_to_yaml(g));
  const auto back = load_geometry(dir.file("g.yaml"));
  ASSERT_EQ(back.layers.size(), g.layers.size());
  for (size_t i = 0; i < g.layers.size(); ++i) {
    EXPECT_EQ(back.layers[i].name, g.layers[i].name);
    EXPECT_EQ(back.layers[i].macs, g.layers[i].macs);
    EXPECT_EQ(back.layers[i].original_macs, g.layers[i].original_macs);
    EXPECT_EQ(back.layers[i].searchable, g.layers[i].searchable);
  }
  const auto r50 = load_geometry(mpq::test::golden("geometry_224.json"), "resnet50");
  EXPECT_EQ(r50.searchable_names(), zoo_geometry("resnet50").searchable_names());
  EXPECT_EQ(r50.excepted_macs(true), zoo_geometry("resnet50").excepted_macs(true));
}

// The text reader is what the file reader parses after reading the file:
// the same geometry, and messages that name the given source.
TEST(Geometry, TextReaderEqualsTheFileReader) {
  mpq::test::TempDir dir;
  const std::string text = geometry_to_yaml(zoo_geometry("resnet20"));
  mpq::test::write_all(dir.file("g.yaml"), text);
  const auto file = load_geometry(dir.file("g.yaml")), from_text = load_geometry_text(text, "given");
  EXPECT_EQ(from_text.model, file.model);
  EXPECT_EQ(from_text.input_h, file.input_h);
  EXPECT_EQ(from_text.searchable_names(), file.searchable_names());
  EXPECT_EQ(from_text.excepted_macs(true), file.excepted_macs(true));
  try {
    load_geometry_text("layers:\n  - {name: a, params: 10}\n", "given");
    FAIL();
  } catch (const mpq::InputError& e) {
    EXPECT_EQ(std::string(e.what()), "given:2:5: layer 'a': missing 'macs'");
  }
}

TEST(Geometry, FileErrorsNameFileKeyAndLine) {
  mpq::test::TempDir dir;
  auto error_of = [&](const std::string& text) {
    mpq::test::write_all(dir.file("g.yaml"), text);
    try {
      load_geometry(dir.file("g.yaml"));
    } catch (const mpq::InputError& e) {
      return std::string(e.what()).substr(dir.path().size() + 1);
    }
    return std::string("no error");
  };
  EXPECT_EQ(error_of("layers:\n  - {name: a, params: 10, macs: 10, kernal: 3}\n"),
            "g.yaml:2:37: unknown key 'layers[].kernal' (did you mean 'kernel'?)");
  EXPECT_EQ(error_of("layers:\n  - {name: a, params: x, macs: 10}\n"), "g.yaml:2:23: params must be an integer (got 'x')");
  EXPECT_EQ(error_of("layers:\n  - {name: a, params: 10}\n"), "g.yaml:2:5: layer 'a': missing 'macs'");
  EXPECT_EQ(error_of("layers: [\n"), "g.yaml:2:1: not valid YAML: end of sequence flow not found");
  EXPECT_EQ(error_of("layers:\n  - {name: a, type: linear, params: 10, macs: 10}\n"),
            "g.yaml: no searchable layer (mark layers with 'searchable: true')");
}
