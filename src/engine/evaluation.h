// Evaluation: a pass over the validation set, BatchNorm recalibration
// before it, and the model's size and BitOPs as the search counts them.
#pragma once

#include "engine/context.h"
#include "engine/meters.h"
#include "engine/model_setup.h"
#include "engine/sources.h"
#include "mpq/search/search.h"

namespace mpq::engine {

// Top-1, top-5 and loss (label smoothing `smoothing`) over `val`, all ranks';
// leaves the network in training mode.
Meter validate(Context& ctx, Model& m, Loader& val, double smoothing);

// Resets every BatchNorm's running statistics and re-estimates them over
// about `images` images of `calib` (each rank its share), as a cumulative
// average of training-mode forwards without gradients; nothing for images <= 0.
void recalibrate_bn(Context& ctx, Model& m, Loader& calib, int images);

// Size and BitOPs of the model as the search reports them (METHOD.md §4);
// every layer at 32 bits for a full-precision one.
search::Report size_report(const Model& m, int height, int width);

}  // namespace mpq::engine
