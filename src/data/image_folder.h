// ImageNet-style ImageFolder decoded with OpenCV, with torchvision's
// transforms (METHOD.md §6).
//
// On-disk layout: root/<class>/<image> with .jpg .jpeg .png .bmp .webp
// (any case); classes are the sub-folders sorted by name, labels their
// index. Train: RandomResizedCrop(size, scale 0.08-1, ratio 3/4-4/3, with
// torchvision's ten attempts and centre-crop fallback) + horizontal flip;
// val: resize the shorter side to `resize`, centre crop `size`. Both
// normalise with ImageNet's mean and std. An image that cannot be decoded
// is reported (never a silent zero image).
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <torch/types.h>

namespace mpq::data {

struct ImageFolderOptions {
  bool train = true;
  int size = 224;    // output side
  int resize = 256;  // val: shorter side before the centre crop
};

class ImageFolder {
 public:
  // Scans root; InputError for a missing folder, no class folders, or no images.
  ImageFolder(const std::string& root, ImageFolderOptions options);

  int64_t size() const { return static_cast<int64_t>(files_.size()); }
  const std::vector<std::string>& classes() const { return classes_; }
  int64_t label(int64_t i) const { return labels_[static_cast<size_t>(i)]; }
  const std::string& path(int64_t i) const { return files_[static_cast<size_t>(i)]; }

  // Sample i as a normalised [3, size, size] float tensor, augmented with
  // `rng` in training; nullopt if the file is not a decodable image.
  std::optional<torch::Tensor> load(int64_t i, std::mt19937& rng) const;

 private:
  std::string root_;
  ImageFolderOptions o_;
  std::vector<std::string> classes_, files_;
  std::vector<int64_t> labels_;
};

// A batch of ImageFolder samples `indices`, each augmented with a generator
// seeded by (seed, epoch, its position `first + k`). An image that does not
// decode is left out, logged with its path and counted in `skipped`; with
// `strict` it is an InputError naming the path instead.
struct FolderBatch {
  torch::Tensor images, labels;  // [n, 3, s, s], [n]; n <= indices.size()
  std::vector<std::string> skipped;
};
FolderBatch load_batch(const ImageFolder& folder, const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch,
                       int64_t first, bool strict);

// torchvision's RandomResizedCrop.get_params on an h x w image: the crop's
// (top, left, height, width).
struct CropBox {
  int top, left, height, width;
};
CropBox random_resized_crop_box(int h, int w, std::mt19937& rng, double scale_min = 0.08, double scale_max = 1.0,
                                double ratio_min = 3.0 / 4.0, double ratio_max = 4.0 / 3.0);

}  // namespace mpq::data
