#include "data/image_folder.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <iterator>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "mpq/common/error.h"

namespace mpq::data {

namespace {

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> list_dir(const std::string& p) {
  std::vector<std::string> out;
  DIR* d = ::opendir(p.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

bool image_name(const std::string& n) {
  const size_t dot = n.find_last_of('.');
  if (dot == std::string::npos) return false;
  std::string ext = n.substr(dot + 1);
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "bmp" || ext == "webp";
}

}  // namespace

CropBox random_resized_crop_box(int h, int w, std::mt19937& rng, double scale_min, double scale_max, double ratio_min,
                                double ratio_max) {
  const double area = static_cast<double>(h) * w;
  std::uniform_real_distribution<double> scale(scale_min, scale_max);
  std::uniform_real_distribution<double> log_ratio(std::log(ratio_min), std::log(ratio_max));
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * scale(rng);
    const double aspect = std::exp(log_ratio(rng));
    const int cw = static_cast<int>(std::lround(std::sqrt(target * aspect)));
    const int ch = static_cast<int>(std::lround(std::sqrt(target / aspect)));
    if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
      const int top = std::uniform_int_distribution<int>(0, h - ch)(rng);
      const int left = std::uniform_int_distribution<int>(0, w - cw)(rng);
      return {top, left, ch, cw};
    }
  }
  // Fallback: a centre crop with the aspect ratio clamped into the range.
  const double in_ratio = static_cast<double>(w) / h;
  int cw = w, ch = h;
  if (in_ratio < ratio_min) {
    ch = static_cast<int>(std::lround(w / ratio_min));
  } else if (in_ratio > ratio_max) {
    cw = static_cast<int>(std::lround(h * ratio_max));
  }
  return {(h - ch) / 2, (w - cw) / 2, ch, cw};
}

ImageFolder::ImageFolder(const std::string& root, ImageFolderOptions options) : root_(root), o_(options) {
  MPQ_CHECK(is_dir(root), root, ": not a folder; point dataloader.path at the folder that holds train/ and val/");
  for (const auto& c : list_dir(root))
    if (is_dir(root + "/" + c)) classes_.push_back(c);
  MPQ_CHECK(!classes_.empty(), root, ": no class folders; expected root/<class>/<image> (ImageFolder layout)");
  for (size_t k = 0; k < classes_.size(); ++k) {
    size_t n = 0;
    for (const auto& f : list_dir(root + "/" + classes_[k]))
      if (image_name(f)) {
        files_.push_back(root + "/" + classes_[k] + "/" + f);
        labels_.push_back(static_cast<int64_t>(k));
        ++n;
      }
    MPQ_CHECK(n > 0, root, "/", classes_[k], ": an empty class folder (no .jpg .jpeg .png .bmp .webp files)");
  }
}

std::optional<torch::Tensor> ImageFolder::load(int64_t i, std::mt19937& rng) const {
  // Read the bytes first: libjpeg decodes a truncated JPEG into a partly grey
  // image with only a warning, so a JPEG must end with its EOI marker.
  std::ifstream in(path(i), std::ios::binary);
  if (!in) return std::nullopt;
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8) {
    bool eoi = false;
    for (size_t k = bytes.size(); k >= 2 && k + 64 >= bytes.size(); --k)
      if (bytes[k - 2] == 0xFF && bytes[k - 1] == 0xD9) {
        eoi = true;
        break;
      }
    if (!eoi) return std::nullopt;
  }
  const cv::Mat bgr = cv::imdecode(bytes, cv::IMREAD_COLOR);
  if (bgr.empty() || bgr.rows < 1 || bgr.cols < 1) return std::nullopt;
  cv::Mat out;
  const int s = o_.size;
  if (o_.train) {
    const CropBox b = random_resized_crop_box(bgr.rows, bgr.cols, rng);
    cv::resize(bgr(cv::Rect(b.left, b.top, b.width, b.height)), out, cv::Size(s, s), 0, 0, cv::INTER_LINEAR);
    if (std::bernoulli_distribution(0.5)(rng)) cv::flip(out, out, 1);
  } else {
    const double f = static_cast<double>(o_.resize) / std::min(bgr.rows, bgr.cols);
    const int rh = std::max(s, static_cast<int>(std::lround(bgr.rows * f)));
    const int rw = std::max(s, static_cast<int>(std::lround(bgr.cols * f)));
    cv::Mat resized;
    cv::resize(bgr, resized, cv::Size(rw, rh), 0, 0, cv::INTER_LINEAR);
    out = resized(cv::Rect((rw - s) / 2, (rh - s) / 2, s, s)).clone();
  }
  // HWC BGR uint8 -> CHW RGB float, normalised with ImageNet's statistics.
  static const float kMean[3] = {0.485f, 0.456f, 0.406f}, kStd[3] = {0.229f, 0.224f, 0.225f};
  torch::Tensor t = torch::empty({3, s, s});
  float* dst = t.data_ptr<float>();
  for (int y = 0; y < s; ++y) {
    const uint8_t* row = out.ptr<uint8_t>(y);
    for (int x = 0; x < s; ++x)
      for (int c = 0; c < 3; ++c)
        dst[(c * s + y) * s + x] = (row[x * 3 + (2 - c)] / 255.0f - kMean[c]) / kStd[c];
  }
  return t;
}

}  // namespace mpq::data
