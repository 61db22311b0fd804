#include "data/image_folder.h"

#include <dirent.h>
#include <sys/stat.h>

#include <csetjmp>
#include <cstdio>

#include <jpeglib.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <iterator>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>


#include "mpq/common/log.h"
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

// HWC BGR uint8 -> CHW RGB float, normalised with ImageNet's statistics.
torch::Tensor to_tensor(const cv::Mat& out) {
  static const float kMean[3] = {0.485f, 0.456f, 0.406f}, kStd[3] = {0.229f, 0.224f, 0.225f};
  const int h = out.rows, w = out.cols;
  torch::Tensor t = torch::empty({3, h, w});
  float* dst = t.data_ptr<float>();
  for (int y = 0; y < h; ++y) {
    const uint8_t* row = out.ptr<uint8_t>(y);
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) dst[(c * h + y) * w + x] = (row[x * 3 + (2 - c)] / 255.0f - kMean[c]) / kStd[c];
  }
  return t;
}

// Width and height from a JPEG's SOF marker, without decoding; false when
// the stream holds none (then the image is decoded at full size).
bool jpeg_size(const std::vector<uint8_t>& b, int& h, int& w) {
  size_t i = 2;
  while (i + 9 < b.size()) {
    if (b[i] != 0xFF) return false;
    const uint8_t m = b[i + 1];
    if (m == 0xFF) {
      ++i;
      continue;
    }
    const size_t len = static_cast<size_t>(b[i + 2]) << 8 | b[i + 3];
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof) {
      h = b[i + 5] << 8 | b[i + 6];
      w = b[i + 7] << 8 | b[i + 8];
      return h > 0 && w > 0;
    }
    if (len < 2) return false;
    i += 2 + len;
  }
  return false;
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
};

extern "C" void jpeg_fail(j_common_ptr c) { std::longjmp(reinterpret_cast<JpegError*>(c->err)->jump, 1); }
extern "C" void jpeg_quiet(j_common_ptr) {}

// Decodes only the rows and columns of `b` (full-size coordinates) at
// 1/`denom` scale, as BGR, with libjpeg-turbo's jpeg_skip_scanlines and
// jpeg_crop_scanline: rows below the crop are never read, rows above and
// columns beside it are entropy-decoded but not transformed. Returns an empty
// Mat on any decoder error (the caller falls back to a full decode).
cv::Mat decode_jpeg_region(const std::vector<uint8_t>& bytes, int denom, const CropBox& b, int full_h, int full_w) {
  // Only trivially destructible objects may live past setjmp.
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.output_message = jpeg_quiet;
  cv::Mat rows;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return cv::Mat();
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  cinfo.scale_num = 1;
  cinfo.scale_denom = static_cast<unsigned>(denom);
  cinfo.out_color_space = JCS_EXT_BGR;
  jpeg_start_decompress(&cinfo);
  const int oh = static_cast<int>(cinfo.output_height), ow = static_cast<int>(cinfo.output_width);
  const double fy = static_cast<double>(oh) / full_h, fx = static_cast<double>(ow) / full_w;
  const int top = std::min(oh - 1, static_cast<int>(b.top * fy));
  const int left = std::min(ow - 1, static_cast<int>(b.left * fx));
  const int ch = std::max(1, std::min(oh - top, static_cast<int>(std::lround(b.height * fy))));
  const int cw = std::max(1, std::min(ow - left, static_cast<int>(std::lround(b.width * fx))));
  JDIMENSION xoff = static_cast<JDIMENSION>(left), width = static_cast<JDIMENSION>(cw);
  jpeg_crop_scanline(&cinfo, &xoff, &width);  // widened to iMCU boundaries
  if (top > 0) jpeg_skip_scanlines(&cinfo, static_cast<JDIMENSION>(top));
  rows.create(ch, static_cast<int>(width), CV_8UC3);
  for (int r = 0; r < ch; ++r) {
    JSAMPROW row = rows.ptr<uint8_t>(r);
    if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) {
      jpeg_destroy_decompress(&cinfo);
      return cv::Mat();
    }
  }
  jpeg_abort_decompress(&cinfo);  // the rows below the crop are never decoded
  jpeg_destroy_decompress(&cinfo);
  return rows(cv::Rect(left - static_cast<int>(xoff), 0, cw, ch));
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
  std::ifstream in(path(i), std::ios::binary | std::ios::ate);
  if (!in) return std::nullopt;
  std::vector<uint8_t> bytes(static_cast<size_t>(std::max<std::streamoff>(0, in.tellg())));
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()))) return std::nullopt;
  if (bytes.size() >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8) {
    bool eoi = false;
    for (size_t k = bytes.size(); k >= 2 && k + 64 >= bytes.size(); --k)
      if (bytes[k - 2] == 0xFF && bytes[k - 1] == 0xD9) {
        eoi = true;
        break;
      }
    if (!eoi) return std::nullopt;
  }
  cv::Mat out;
  const int s = o_.size;
  int jh = 0, jw = 0;
  if (o_.train && jpeg_size(bytes, jh, jw)) {
    // The crop is drawn on the full-size geometry; then only its region is
    // decoded, at 1/2, 1/4 or 1/8 scale when the crop still covers the output
    // at that scale (DCT scaling; libjpeg-turbo's other k/8 scales have no
    // SIMD code and measured slower): most of the decoding work is skipped.
    const CropBox b = random_resized_crop_box(jh, jw, rng);
    int r = 1;
    while (r < 8 && std::min(b.height, b.width) / (2 * r) >= s) r *= 2;
    cv::Mat region = decode_jpeg_region(bytes, r, b, jh, jw);
    if (region.empty()) {  // e.g. CMYK: OpenCV's full decode, then the crop
      const cv::Mat img = cv::imdecode(bytes, cv::IMREAD_COLOR);
      if (img.empty() || img.rows != jh || img.cols != jw) return std::nullopt;
      region = img(cv::Rect(b.left, b.top, b.width, b.height));
    }
    cv::resize(region, out, cv::Size(s, s), 0, 0, cv::INTER_LINEAR);
    if (std::bernoulli_distribution(0.5)(rng)) cv::flip(out, out, 1);
    return to_tensor(out);
  }
  const cv::Mat bgr = cv::imdecode(bytes, cv::IMREAD_COLOR);
  if (bgr.empty() || bgr.rows < 1 || bgr.cols < 1) return std::nullopt;
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
  return to_tensor(out);
}

FolderBatch load_batch(const ImageFolder& folder, const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch,
                       int64_t first, bool strict) {
  FolderBatch b;
  std::vector<torch::Tensor> xs;
  std::vector<int64_t> ys;
  for (size_t k = 0; k < indices.size(); ++k) {
    const int64_t i = indices[k];
    std::seed_seq seq{seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(first + static_cast<int64_t>(k))};
    std::mt19937 rng(seq);
    if (auto t = folder.load(i, rng)) {
      xs.push_back(*t);
      ys.push_back(folder.label(i));
      continue;
    }
    MPQ_CHECK(!strict, folder.path(i), ": not a decodable image (corrupt or truncated); remove it, or leave "
              "corrupt images out of training by turning off the strict setting");
    mpq::log::warn("data: skipping {}: not a decodable image", folder.path(i));
    b.skipped.push_back(folder.path(i));
  }
  MPQ_CHECK(!xs.empty(), "data: every image of a batch failed to decode (first: ",
            b.skipped.empty() ? std::string("?") : b.skipped.front(), ")");
  b.images = torch::stack(xs);
  b.labels = torch::tensor(ys, torch::kLong);
  return b;
}

}  // namespace mpq::data
