// Text and SVG pictures of a simulated schedule, in the style of the DualPipe paper's Figure 5:
// one row per rank, time to the right, idle time left blank.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "parallel/schedule.h"

namespace shoestring::parallel {
namespace {

// "F3" for chunk 0, "f3" for chunk 1 (DualPipe's second direction, DualPipeV's way back),
// "F3:2" for higher chunks (interleaved).
std::string half_label(Op op, int mb, int chunk) {
  std::string s(1, op == Op::FB ? 'F' : op_name(op)[0]);
  if (chunk == 1) s[0] = char(s[0] - 'A' + 'a');
  s += std::to_string(mb);
  if (chunk >= 2) s.append(1, ':').append(std::to_string(chunk));
  return s;
}

std::string label(const Action& a) {
  if (a.op == Op::FB) return half_label(Op::F, a.mb, a.chunk) + half_label(Op::B, a.mb2, a.chunk2);
  return half_label(a.op, a.mb, a.chunk);
}

// The time unit of one text column: the shortest compute action, so every action spans a whole
// number of columns when costs are multiples of it.
double time_unit(const Simulation& sim) {
  double unit = 0;
  for (const auto& row : sim.timeline)
    for (const auto& t : row)
      if (t.end > t.start && (unit == 0 || t.end - t.start < unit)) unit = t.end - t.start;
  return unit > 0 ? unit : 1;
}

}  // namespace

std::string render_text(const Schedule& s, const Simulation& sim) {
  const double unit = time_unit(sim);
  size_t width = 3;
  for (const auto& row : sim.timeline)
    for (const auto& t : row) width = std::max(width, label(t.action).size() + 1);
  const int name_width = int(std::to_string(std::max(0, s.pp - 1)).size());
  std::ostringstream out;
  for (size_t r = 0; r < sim.timeline.size(); ++r) {
    char head[32];
    std::snprintf(head, sizeof head, "rank %*zu |", name_width, r);
    std::string line = head;
    const size_t origin = line.size();
    for (const auto& t : sim.timeline[r]) {
      const size_t col = origin + size_t(std::lround(t.start / unit)) * width;
      const size_t cols = std::max<size_t>(1, size_t(std::lround((t.end - t.start) / unit)));
      if (line.size() < col) line.append(col - line.size(), ' ');
      // Label, then '-' over the rest of a long action, one blank before the next cell.
      std::string cell = label(t.action);
      cell.resize(cols * width - 1, '-');
      line.resize(col);
      line += cell + " ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << "\n";
  }
  return out.str();
}

std::string render_svg(const Schedule& s, const Simulation& sim) {
  const double px = 24, row = 28, left = 60, top = 10;
  const double w = left + sim.makespan * px + 10, h = top + double(s.pp) * row + 10;
  std::ostringstream out;
  out << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\"" << h << "\" font-family=\"monospace\" font-size=\"11\">\n"
      << "<title>" << s.name << " pp=" << s.pp << " micro-batches=" << s.microbatches << "</title>\n";
  // Forward blue, backward green, input-only backward teal, weight grey, overlapped purple; the
  // second chunk a lighter shade.
  auto colour = [](Op op, int chunk) {
    const bool light = chunk % 2 == 1;
    switch (op) {
      case Op::F: return light ? "#9ecae1" : "#3182bd";
      case Op::B: return light ? "#a1d99b" : "#31a354";
      case Op::I: return light ? "#99d8c9" : "#2ca25f";
      case Op::W: return light ? "#d9d9d9" : "#969696";
      default: return light ? "#bcbddc" : "#756bb1";
    }
  };
  for (size_t r = 0; r < sim.timeline.size(); ++r) {
    const double y = top + double(r) * row;
    out << "<text x=\"4\" y=\"" << y + row * 0.6 << "\">rank " << r << "</text>\n";
    for (const auto& t : sim.timeline[r]) {
      const double x = left + t.start * px, width = (t.end - t.start) * px;
      out << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << width << "\" height=\"" << row - 4 << "\" fill=\""
          << colour(t.action.op, t.action.chunk) << "\" stroke=\"#333\" stroke-width=\"0.5\"><title>" << to_string(t.action)
          << " " << t.start << "-" << t.end << "</title></rect>\n";
      out << "<text x=\"" << x + width / 2 << "\" y=\"" << y + row * 0.55 << "\" text-anchor=\"middle\">"
          << (t.action.op == Op::FB ? std::to_string(t.action.mb) + "/" + std::to_string(t.action.mb2) : std::to_string(t.action.mb))
          << "</text>\n";
    }
  }
  out << "</svg>\n";
  return out.str();
}

}  // namespace shoestring::parallel
