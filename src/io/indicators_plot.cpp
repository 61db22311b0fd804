#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "mpq/common/error.h"
#include "mpq/common/text.h"
#include "mpq/io/indicators.h"

namespace mpq::io {

namespace {

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

}  // namespace

std::string indicators_svg(const Indicators& ind, std::vector<int> bits) {
  MPQ_ASSERT(!bits.empty() && !ind.layer_names.empty());
  std::sort(bits.rbegin(), bits.rend());
  static const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"};
  const size_t n = ind.layer_names.size();
  const double left = 70, right = 130, top = 40, panel_h = 220, gap = 60, bottom = 170;
  const double plot_w = std::max(300.0, 18.0 * static_cast<double>(n));
  const double width = left + plot_w + right, height = top + 2 * panel_h + gap + bottom;
  const auto x = [&](size_t l) { return left + (n == 1 ? plot_w / 2 : plot_w * static_cast<double>(l) / static_cast<double>(n - 1)); };
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(width) + "\" height=\"" + num(height) +
                    "\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  const std::vector<std::map<int, double>>* tables[] = {&ind.weight, &ind.act};
  const char* titles[] = {"weight indicators (log10 of the learned scale)", "activation indicators (log10 of the learned scale)"};
  for (int p = 0; p < 2; ++p) {
    const auto& t = *tables[p];
    double lo = 1e300, hi = -1e300;
    for (const auto& row : t)
      for (int b : bits) {
        const double v = std::log10(row.at(b));
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
    if (hi - lo < 1e-9) hi = lo + 1;
    const double y0 = top + p * (panel_h + gap);
    const auto y = [&](double v) { return y0 + panel_h - panel_h * (std::log10(v) - lo) / (hi - lo); };
    svg += "<text x=\"" + num(left) + "\" y=\"" + num(y0 - 10) + "\" font-size=\"13\">" + titles[p] + "</text>\n";
    svg += "<rect x=\"" + num(left) + "\" y=\"" + num(y0) + "\" width=\"" + num(plot_w) + "\" height=\"" + num(panel_h) +
           "\" fill=\"none\" stroke=\"#444\"/>\n";
    for (int k = 0; k <= 4; ++k) {  // y ticks
      const double v = lo + (hi - lo) * k / 4, yy = y0 + panel_h - panel_h * k / 4;
      char label[32];
      std::snprintf(label, sizeof label, "%.2f", v);
      svg += "<text x=\"" + num(left - 6) + "\" y=\"" + num(yy + 4) + "\" text-anchor=\"end\">" + label + "</text>\n";
    }
    for (size_t k = 0; k < bits.size(); ++k) {
      const char* color = kColors[k % (sizeof kColors / sizeof *kColors)];
      std::string pts;
      for (size_t l = 0; l < n; ++l) pts += num(x(l)) + "," + num(y(t[l].at(bits[k]))) + " ";
      svg += "<polyline fill=\"none\" stroke=\"" + std::string(color) + "\" stroke-width=\"1.5\" points=\"" + pts + "\"/>\n";
      if (p == 0)
        svg += "<text x=\"" + num(left + plot_w + 12) + "\" y=\"" + num(top + 14 * static_cast<double>(k + 1)) + "\" fill=\"" +
               color + "\">" + std::to_string(bits[k]) + " bits</text>\n";
    }
    for (size_t l = 0; l < n; ++l)
      for (size_t k = 1; k < bits.size(); ++k)
        if (t[l].at(bits[k]) < t[l].at(bits[k - 1]))
          svg += "<circle class=\"outlier\" cx=\"" + num(x(l)) + "\" cy=\"" + num(y(t[l].at(bits[k]))) +
                 "\" r=\"5\" fill=\"none\" stroke=\"red\" stroke-width=\"2\"/>\n";
  }
  svg += "<text x=\"" + num(left + plot_w + 12) + "\" y=\"" + num(top + 14 * static_cast<double>(bits.size() + 2)) +
         "\" fill=\"red\">o outlier</text>\n";
  const double ly = top + 2 * panel_h + gap + 8;
  for (size_t l = 0; l < n; ++l)
    svg += "<text transform=\"translate(" + num(x(l) + 3) + "," + num(ly) + ") rotate(60)\">" +
           xml_escape(ind.layer_names[l]) + "</text>\n";
  return svg + "</svg>\n";
}

}  // namespace mpq::io
