// ImageFolder in a build without OpenCV (-DMPQ_WITH_OPENCV=OFF, e.g. for a
// GPU machine that lacks Debian's OpenCV): the IDX and CIFAR datasets work
// as ever; an ImageFolder dataset is refused with one line.
#include "data/image_folder.h"

#include "mpq/common/error.h"

namespace mpq::data {

ImageFolder::ImageFolder(const std::string& root, ImageFolderOptions options) : root_(root), o_(options) {
  throw InputError(detail::concat(root, ": ImageFolder datasets (dataset: imagenet) need OpenCV, and this mpq was "
                                        "built without it (-DMPQ_WITH_OPENCV=OFF); rebuild with OpenCV or use an "
                                        "IDX/CIFAR dataset"));
}

std::optional<torch::Tensor> ImageFolder::load(int64_t, std::mt19937&) const { return std::nullopt; }

FolderBatch load_batch(const ImageFolder&, const std::vector<int64_t>&, uint64_t, int64_t, int64_t, bool) {
  return {};
}

}  // namespace mpq::data
