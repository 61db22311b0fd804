// Builds without ONNX's protobuf classes (no libonnx-dev): the export is refused.
#include "export/onnx_graph.h"
#include "mpq/common/error.h"

namespace mpq::onnx_export {

namespace {

[[noreturn]] void unavailable() {
  throw InputError("export: this mpq was built without ONNX (Debian's libonnx-dev and libprotobuf-dev); install them "
                   "(scripts/install_deps.sh) and rebuild");
}

}  // namespace

void write_model(const Graph&, const std::string&) { unavailable(); }
GraphSummary summarize_model(const std::string&) { unavailable(); }

}  // namespace mpq::onnx_export
