// Writes the loader benchmark's image set: an ImageFolder of `classes`
// folders holding `count` JPEGs of 500x375 at quality 90, with smooth
// gradients plus noise so they compress like photographs.
// Usage: make_jpeg_set OUT_DIR [count=512] [classes=8]
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: make_jpeg_set OUT_DIR [count] [classes]\n");
    return 2;
  }
  const std::string out = argv[1];
  const int count = argc > 2 ? std::atoi(argv[2]) : 512, classes = argc > 3 ? std::atoi(argv[3]) : 8;
  ::mkdir(out.c_str(), 0755);
  std::mt19937 rng(0);
  std::uniform_real_distribution<double> u(0, 1);
  for (int c = 0; c < classes; ++c) ::mkdir((out + "/class" + std::to_string(c)).c_str(), 0755);
  for (int i = 0; i < count; ++i) {
    cv::Mat img(375, 500, CV_8UC3);
    const double a = u(rng) * 255, b = u(rng) * 255, f = 0.01 + u(rng) * 0.05;
    for (int y = 0; y < img.rows; ++y)
      for (int x = 0; x < img.cols; ++x) {
        auto& p = img.at<cv::Vec3b>(y, x);
        p[0] = cv::saturate_cast<uint8_t>(a * (0.5 + 0.5 * std::sin(f * x)));
        p[1] = cv::saturate_cast<uint8_t>(b * (0.5 + 0.5 * std::cos(f * y)));
        p[2] = cv::saturate_cast<uint8_t>((x + y) % 256);
      }
    cv::Mat noise(img.size(), CV_8UC3);
    cv::randn(noise, 0, 12);
    img += noise;
    const std::string path = out + "/class" + std::to_string(i % classes) + "/img" + std::to_string(i) + ".jpg";
    if (!cv::imwrite(path, img, {cv::IMWRITE_JPEG_QUALITY, 90})) {
      std::fprintf(stderr, "make_jpeg_set: cannot write %s\n", path.c_str());
      return 1;
    }
  }
  std::printf("%d images in %d classes under %s\n", count, classes, out.c_str());
  return 0;
}
