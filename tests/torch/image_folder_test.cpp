// ImageFolder on a small tree written with OpenCV: classes, labels, the two
// transforms, a truncated JPEG and a text file named .jpg, the error texts.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "data/image_folder.h"
#include "mpq/common/error.h"
#include "test_util.h"

using namespace mpq::data;

namespace {

void write_image(const std::string& path, int h, int w, cv::Scalar bgr) {
  cv::Mat m(h, w, CV_8UC3, bgr);
  ASSERT_TRUE(cv::imwrite(path, m, {cv::IMWRITE_JPEG_QUALITY, 90}));
}

}  // namespace

TEST(ImageFolder, ClassesLabelsAndTransforms) {
  mpq::test::TempDir dir;
  for (const char* c : {"b_dog", "a_cat"}) ::mkdir(dir.file(c).c_str(), 0755);
  write_image(dir.file("a_cat/1.jpg"), 300, 400, {0, 0, 255});  // red (BGR)
  write_image(dir.file("a_cat/2.PNG"), 50, 60, {0, 255, 0});
  write_image(dir.file("b_dog/x.jpeg"), 375, 500, {255, 0, 0});
  mpq::test::write_all(dir.file("b_dog/notes.txt"), "not an image");
  ImageFolder val(dir.path(), {false, 224, 256});
  ASSERT_EQ(val.classes(), (std::vector<std::string>{"a_cat", "b_dog"}));
  ASSERT_EQ(val.size(), 3);
  EXPECT_EQ(val.label(2), 1);
  std::mt19937 rng(0);
  const auto t = val.load(0, rng);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->sizes(), torch::IntArrayRef({3, 224, 224}));
  // A red image: channel 0 (R) near (1 - 0.485) / 0.229, channel 2 near -0.406 / 0.225.
  EXPECT_NEAR((*t)[0].mean().item<float>(), (1 - 0.485f) / 0.229f, 0.05);
  EXPECT_NEAR((*t)[2].mean().item<float>(), -0.406f / 0.225f, 0.05);
  ImageFolder train(dir.path(), {true, 32, 36});
  std::mt19937 r1(5), r2(5);
  EXPECT_TRUE(torch::equal(*train.load(1, r1), *train.load(1, r2)));  // seeded: repeatable
  EXPECT_EQ(train.load(2, r1)->sizes(), torch::IntArrayRef({3, 32, 32}));
}

TEST(ImageFolder, LargeJpegsDecodeAtReducedSize) {
  mpq::test::TempDir dir;
  ::mkdir(dir.file("c").c_str(), 0755);
  write_image(dir.file("c/big.jpg"), 1200, 1600, {0, 0, 255});  // red
  ImageFolder f(dir.path(), {true, 64, 72});
  for (unsigned seed = 0; seed < 20; ++seed) {
    std::mt19937 rng(seed);
    const auto t = f.load(0, rng);
    ASSERT_TRUE(t.has_value());
    ASSERT_EQ(t->sizes(), torch::IntArrayRef({3, 64, 64}));
    EXPECT_NEAR((*t)[0].mean().item<float>(), (1 - 0.485f) / 0.229f, 0.05);
  }
}

TEST(ImageFolder, BadImagesAreReportedNotZeroed) {
  mpq::test::TempDir dir;
  ::mkdir(dir.file("c").c_str(), 0755);
  write_image(dir.file("c/good.jpg"), 64, 64, {10, 20, 30});
  const std::string jpg = mpq::test::read_all(dir.file("c/good.jpg"));
  mpq::test::write_all(dir.file("c/trunc.jpg"), jpg.substr(0, jpg.size() / 3));
  mpq::test::write_all(dir.file("c/text.jpg"), "this is text, not a JPEG\n");
  ImageFolder f(dir.path(), {false, 32, 36});
  std::mt19937 rng(0);
  ASSERT_EQ(f.size(), 3);  // good.jpg, text.jpg, trunc.jpg
  EXPECT_TRUE(f.load(0, rng).has_value());
  EXPECT_FALSE(f.load(1, rng).has_value()) << "a text file named .jpg";
  EXPECT_FALSE(f.load(2, rng).has_value()) << "a truncated JPEG must not pass as a partly grey image";
}

TEST(ImageFolder, BatchesSkipAndCountBadImagesOrStopWhenStrict) {
  mpq::test::TempDir dir;
  ::mkdir(dir.file("c").c_str(), 0755);
  write_image(dir.file("c/a.jpg"), 40, 40, {10, 20, 30});
  write_image(dir.file("c/b.jpg"), 40, 40, {30, 20, 10});
  mpq::test::write_all(dir.file("c/bad.jpg"), "not a jpeg");
  ImageFolder f(dir.path(), {true, 16, 20});
  const FolderBatch b = load_batch(f, {0, 1, 2}, 7, 0, 0, false);  // a.jpg, b.jpg, bad.jpg
  EXPECT_EQ(b.images.sizes(), torch::IntArrayRef({2, 3, 16, 16}));
  ASSERT_EQ(b.skipped.size(), 1u);
  EXPECT_EQ(b.skipped[0], dir.file("c/bad.jpg"));
  EXPECT_TRUE(torch::equal(b.images, load_batch(f, {0, 1, 2}, 7, 0, 0, false).images));  // seeded per position
  try {
    load_batch(f, {2}, 7, 0, 0, true);
    FAIL();
  } catch (const mpq::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("c/bad.jpg") + ": not a decodable image"), std::string::npos);
  }
}

TEST(ImageFolder, FolderErrors) {
  mpq::test::TempDir dir;
  auto error_of = [](const std::string& root) {
    try {
      ImageFolder f(root, {});
    } catch (const mpq::InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of(dir.file("missing")).find("not a folder"), std::string::npos);
  EXPECT_NE(error_of(dir.path()).find("no class folders"), std::string::npos);
  ::mkdir(dir.file("empty").c_str(), 0755);
  EXPECT_NE(error_of(dir.path()).find("/empty: an empty class folder"), std::string::npos);
}

TEST(ImageFolder, RandomResizedCropFollowsTorchvision) {
  std::mt19937 rng(1);
  for (int k = 0; k < 200; ++k) {
    const CropBox b = random_resized_crop_box(375, 500, rng);
    EXPECT_GT(b.width, 0);
    EXPECT_LE(b.left + b.width, 500);
    EXPECT_LE(b.top + b.height, 375);
    const double area = double(b.width) * b.height / (375.0 * 500.0);
    EXPECT_GE(area, 0.08 - 0.01);
  }
  // An extreme aspect ratio falls back to a centre crop clamped to 4/3.
  std::mt19937 r2(2);
  const CropBox f = random_resized_crop_box(10, 1000, r2);
  EXPECT_EQ(f.height, 10);
  EXPECT_EQ(f.width, 13);
  EXPECT_EQ(f.left, (1000 - 13) / 2);
}

// The training transform decodes only the crop's region (and at reduced
// scale when it can); it must give what a full decode, crop and resize give.
TEST(ImageFolder, RegionDecodingMatchesAFullDecodeOfTheCrop) {
  mpq::test::TempDir dir;
  ::mkdir(dir.file("c").c_str(), 0755);
  cv::Mat m(900, 1200, CV_8UC3);
  for (int y = 0; y < m.rows; ++y)
    for (int x = 0; x < m.cols; ++x)
      m.at<cv::Vec3b>(y, x) = {static_cast<uint8_t>(x * 255 / m.cols), static_cast<uint8_t>(y * 255 / m.rows),
                               static_cast<uint8_t>(((x / 16 + y / 16) % 2) * 200 + 20)};
  ASSERT_TRUE(cv::imwrite(dir.file("c/t.jpg"), m, {cv::IMWRITE_JPEG_QUALITY, 90}));
  const int s = 96;
  ImageFolder f(dir.path(), {true, s, 110});
  const float mean[] = {0.485f, 0.456f, 0.406f}, stdv[] = {0.229f, 0.224f, 0.225f};
  int reduced = 0;
  for (unsigned seed = 0; seed < 30; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed), ref_rng(seed);
    const auto t = f.load(0, rng);
    ASSERT_TRUE(t.has_value());
    // Reference: OpenCV's decode at the same scale, then the crop, resize and flip.
    const CropBox b = random_resized_crop_box(900, 1200, ref_rng);
    int r = 1;
    while (r < 8 && std::min(b.height, b.width) / (2 * r) >= s) r *= 2;
    reduced += r > 1;
    const int flag = r == 1 ? cv::IMREAD_COLOR
                            : r == 2 ? cv::IMREAD_REDUCED_COLOR_2
                                     : r == 4 ? cv::IMREAD_REDUCED_COLOR_4 : cv::IMREAD_REDUCED_COLOR_8;
    const cv::Mat img = cv::imread(dir.file("c/t.jpg"), flag);
    const double fy = static_cast<double>(img.rows) / 900, fx = static_cast<double>(img.cols) / 1200;
    const int top = std::min(img.rows - 1, static_cast<int>(b.top * fy));
    const int left = std::min(img.cols - 1, static_cast<int>(b.left * fx));
    const int ch = std::max(1, std::min(img.rows - top, static_cast<int>(std::lround(b.height * fy))));
    const int cw = std::max(1, std::min(img.cols - left, static_cast<int>(std::lround(b.width * fx))));
    cv::Mat out;
    cv::resize(img(cv::Rect(left, top, cw, ch)), out, cv::Size(s, s), 0, 0, cv::INTER_LINEAR);
    if (std::bernoulli_distribution(0.5)(ref_rng)) cv::flip(out, out, 1);
    torch::Tensor ref = torch::empty({3, s, s});
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < s; ++y)
        for (int x = 0; x < s; ++x)
          ref[c][y][x] = (out.at<cv::Vec3b>(y, x)[2 - c] / 255.0f - mean[c]) / stdv[c];
    // Within about one grey level on average (the decoders upsample chroma at the region's edge differently).
    EXPECT_LT((*t - ref).abs().mean().item<float>(), 0.02f);
  }
  EXPECT_GT(reduced, 0) << "no crop exercised the reduced-scale path";
}
