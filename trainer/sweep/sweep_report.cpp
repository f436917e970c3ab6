#include "trainer/sweep/sweep_report.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "trainer/sweep/sweep_state.h"

namespace fs = std::filesystem;

namespace shoestring::sweep {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// NaN, not 0, is "not measured": the table leaves such a cell empty and the plots skip it.
void no_losses(RunRow& r) { r.final_loss = r.best_loss = r.final_val_loss = r.best_val_loss = kNaN; }

std::string num(double x, const char* fmt = "%.6g") {
  if (std::isnan(x)) return "";
  char buf[48];
  std::snprintf(buf, sizeof buf, fmt, x);
  return buf;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

bool numeric(const std::string& s, double& out) {
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return !s.empty() && end == s.c_str() + s.size() && std::isfinite(out);
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// gnuplot string literal (single quotes: no escapes but the doubled quote).
std::string gp_text(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string file_stem(const std::string& key) {
  std::string out = key;
  for (char& c : out)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
  return out;
}

}  // namespace

std::vector<RunRow> gather(const SweepFile& s, const std::vector<RunSpec>& runs) {
  std::vector<RunRow> rows;
  for (const auto& r : runs) {
    RunRow row;
    row.name = r.name;
    for (const auto& [k, v] : r.overrides) row.axis_values.push_back(v);
    const Config cfg = resolve_run(s, r);
    const RunStatus st = read_status(s, r.name);
    row.status = st.status;
    row.steps = cfg.train.steps;
    no_losses(row);
    std::vector<double> speeds;
    double segment_elapsed = 0, previous = -1;
    const MetricsFile m = read_metrics(cfg.log.run_dir, [&](const std::string& line) {
      double step = 0, loss = 0, x = 0;
      json_number(line, "step", step);  // read_metrics checked it: an integer >= 1
      row.steps_done = int64_t(step);
      if (json_number(line, "loss", loss)) {  // null for a skipped step
        row.loss_curve.emplace_back(int64_t(step), loss);
        if (std::isfinite(loss)) {
          row.final_loss = loss;
          if (std::isnan(row.best_loss) || loss < row.best_loss) row.best_loss = loss;
        }
      }
      if (json_number(line, "val_loss", x) && std::isfinite(x)) {
        row.final_val_loss = x;
        if (std::isnan(row.best_val_loss) || x < row.best_val_loss) row.best_val_loss = x;
      }
      if (json_number(line, "tokens_per_s", x) && x > 0) speeds.push_back(x);
      if (json_number(line, "elapsed_s", x)) {
        // A resumed attempt counts elapsed_s from its own start: add up the attempts.
        if (x < previous) row.elapsed_s += segment_elapsed;
        segment_elapsed = previous = x;
      }
    });
    row.problem = metrics_problem(cfg, m);
    if (!row.problem.empty()) {
      // What was read before the bad line is no result either: a table row must not look like one.
      RunRow blank;
      blank.name = row.name, blank.axis_values = row.axis_values, blank.steps = row.steps, blank.problem = row.problem;
      blank.status = "unreadable";
      no_losses(blank);
      blank.median_tokens_per_s = blank.elapsed_s = kNaN;
      rows.push_back(std::move(blank));
      continue;
    }
    row.elapsed_s += segment_elapsed;
    if (!speeds.empty()) {
      std::sort(speeds.begin(), speeds.end());
      const size_t n = speeds.size();
      row.median_tokens_per_s = n % 2 ? speeds[n / 2] : 0.5 * (speeds[n / 2 - 1] + speeds[n / 2]);
    }
    row.tokens = row.steps_done * tokens_per_step(cfg, st.ranks);
    if (row.steps_done >= row.steps && row.status != "done") row.status = "done";
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string report_csv(const SweepFile& s, const std::vector<RunRow>& rows) {
  std::ostringstream o;
  o << "name";
  for (const auto& a : s.axes) o << "," << a.key;
  o << ",status,steps_done,steps,final_loss,best_loss,final_val_loss,best_val_loss,median_tokens_per_s,elapsed_s,tokens\n";
  for (const auto& r : rows) {
    o << csv_field(r.name);
    for (const auto& v : r.axis_values) o << "," << csv_field(v);
    // An unreadable run's counts are unknown, not 0.
    const std::string steps_done = r.problem.empty() ? std::to_string(r.steps_done) : "";
    const std::string tokens = r.problem.empty() ? std::to_string(r.tokens) : "";
    o << "," << r.status << "," << steps_done << "," << r.steps << "," << num(r.final_loss) << "," << num(r.best_loss) << ","
      << num(r.final_val_loss) << "," << num(r.best_val_loss) << "," << num(r.median_tokens_per_s, "%.1f") << ","
      << num(r.elapsed_s, "%.2f") << "," << tokens << "\n";
  }
  return o.str();
}

std::string report_markdown(const SweepFile& s, const std::vector<RunRow>& rows, const std::vector<std::string>& plots) {
  std::ostringstream o;
  o << "# Sweep " << s.name << "\n\n"
    << "Sweep file `" << s.path << "`, base `" << s.base << "`, " << rows.size() << " runs; written by `shoestring sweep report` "
    << utc_now() << ".\n\n| run |";
  for (const auto& a : s.axes) o << " " << a.key << " |";
  o << " status | steps | final loss | best loss | final val | best val | tokens/s (median) | elapsed s | tokens |\n|---|";
  for (size_t i = 0; i < s.axes.size(); ++i) o << "---|";
  o << "---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  auto cell = [](const std::string& x) { return x.empty() ? std::string("-") : x; };
  for (const auto& r : rows) {
    o << "| " << r.name << " |";
    for (const auto& v : r.axis_values) o << " " << v << " |";
    const bool known = r.problem.empty();
    o << " " << r.status << " | " << (known ? std::to_string(r.steps_done) : "-") << "/" << r.steps << " | "
      << cell(num(r.final_loss, "%.4f")) << " | " << cell(num(r.best_loss, "%.4f")) << " | " << cell(num(r.final_val_loss, "%.4f"))
      << " | " << cell(num(r.best_val_loss, "%.4f")) << " | "
      << cell(r.median_tokens_per_s > 0 ? num(r.median_tokens_per_s, "%.0f") : "") << " | " << cell(num(r.elapsed_s, "%.1f"))
      << " | " << (known ? std::to_string(r.tokens) : "-") << " |\n";
  }
  bool any_unreadable = false;
  for (const auto& r : rows) {
    if (r.problem.empty()) continue;
    if (!any_unreadable) o << "\nUnreadable metrics (no numbers reported for these runs):\n\n";
    any_unreadable = true;
    std::string text = r.problem;  // may quote a damaged line: keep it inside its code span
    std::replace(text.begin(), text.end(), '`', '\'');
    o << "- " << r.name << ": `" << text << "`\n";
  }
  if (!plots.empty()) o << "\n";
  for (const auto& p : plots) o << "![" << p << "](" << p << ")\n\n";
  return o.str();
}

std::vector<std::string> draw_plots(const SweepFile& s, const std::vector<RunRow>& rows, std::string& skipped) {
  std::vector<std::string> plots;
  const bool any = std::any_of(rows.begin(), rows.end(), [](const RunRow& r) { return !r.loss_curve.empty(); });
  if (!any) {
    skipped = "no run has logged a step yet";
    return plots;
  }
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    skipped = "gnuplot is not installed (Debian: apt-get install gnuplot-nox)";
    return plots;
  }
  std::ostringstream gp;
  gp << "# Written by `shoestring sweep report`; `gnuplot report.gp` in this folder redraws the plots.\n"
     << "set terminal pngcairo size 1100,620 noenhanced font 'sans,11'\n"
     << "set grid lc rgb '#dddddd'\nset border lc rgb '#555555'\nset tics nomirror\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].loss_curve.empty()) continue;
    gp << "$run" << i << " << EOD\n";
    for (const auto& [step, loss] : rows[i].loss_curve)
      if (std::isfinite(loss)) gp << step << " " << num(loss, "%.8g") << "\n";
    gp << "EOD\n";
  }
  // Every run's curve on one plot; the legend sits outside so it never hides a curve.
  gp << "set output 'report-loss.png'\n"
     << "set title " << gp_text("Sweep " + s.name + ": training loss per step") << "\n"
     << "set xlabel 'step'\nset ylabel 'training loss'\nset xrange [0:*]\nset autoscale xfixmax\n"
     << "set key outside right top vertical Left reverse samplen 2 spacing 1.1 box lc rgb '#bbbbbb'\n"
     << "plot ";
  bool first = true;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].loss_curve.empty()) continue;
    gp << (first ? "" : ", \\\n     ") << "$run" << i << " using 1:2 with lines lw 2 title " << gp_text(rows[i].name);
    first = false;
  }
  gp << "\nunset key\nset autoscale x\n";
  plots.push_back("report-loss.png");
  // Final loss against each axis (not seeds: they show the noise, which the spread at one x shows too).
  for (size_t a = 0; a < s.axes.size(); ++a) {
    const Axis& axis = s.axes[a];
    if (axis.kind == Axis::Seeds) continue;
    std::vector<std::pair<std::string, double>> points;
    for (const auto& r : rows)
      if (!std::isnan(r.final_loss)) points.emplace_back(r.axis_values[a], r.final_loss);
    if (points.empty()) continue;
    bool all_numeric = true;
    double x = 0;
    for (const auto& p : points) all_numeric = all_numeric && numeric(p.first, x);
    const std::string png = "report-final-loss-" + file_stem(axis.key) + ".png";
    gp << "set output '" << png << "'\n"
       << "set title " << gp_text("Sweep " + s.name + ": final training loss against " + axis.key) << "\n"
       << "set xlabel " << gp_text(axis.key + (axis.log_scale() && all_numeric ? " (log scale)" : "")) << "\n"
       << "set ylabel 'final training loss'\n";
    gp << "$axis" << a << " << EOD\n";
    if (all_numeric) {
      double lo = std::numeric_limits<double>::infinity(), hi = -lo;
      for (const auto& p : points) {
        numeric(p.first, x);
        lo = std::min(lo, x), hi = std::max(hi, x);
        gp << p.first << " " << num(p.second, "%.8g") << "\n";
      }
      // gnuplot's autoscale would stretch a log axis to whole decades: pad the data range instead.
      const bool log_x = axis.log_scale() && lo > 0;
      const double pad = log_x ? std::pow(hi / lo, 0.06) * 1.15 : std::max(0.06 * (hi - lo), hi == lo ? std::max(1e-9, 0.1 * std::fabs(lo)) : 0.0);
      gp << "EOD\n" << (log_x ? "set logscale x\n" : "unset logscale x\n") << "set xrange [" << num(log_x ? lo / pad : lo - pad, "%.10g")
         << ":" << num(log_x ? hi * pad : hi + pad, "%.10g") << "]\n"
         << "set offsets 0, 0, graph 0.05, graph 0.05\n"
         << "plot $axis" << a << " using 1:2 with points pt 7 ps 1.6 lc rgb '#1f77b4' notitle\n"
         << "set autoscale x\n";
    } else {
      // Categories (e.g. a choice of schedules): one x position per distinct value, in first-seen order.
      std::map<std::string, int> position;
      std::vector<std::string> order;
      for (const auto& p : points)
        if (position.emplace(p.first, int(order.size())).second) order.push_back(p.first);
      for (const auto& p : points) gp << position[p.first] << " " << num(p.second, "%.8g") << "\n";
      gp << "EOD\nunset logscale x\nset xrange [-0.5:" << order.size() - 0.5 << "]\nset xtics (";
      for (size_t k = 0; k < order.size(); ++k) gp << (k ? ", " : "") << gp_text(order[k]) << " " << k;
      gp << ")\nset offsets 0, 0, graph 0.05, graph 0.05\n"
         << "plot $axis" << a << " using 1:2 with points pt 7 ps 1.6 lc rgb '#1f77b4' notitle\n"
         << "set xtics autofreq\nset autoscale x\n";
    }
    plots.push_back(png);
  }
  gp << "unset output\n";
  std::ofstream(fs::path(s.dir) / "report.gp", std::ios::trunc) << gp.str();
  const std::string cmd = "cd " + shell_quote(s.dir) + " && gnuplot report.gp > report-gnuplot.log 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    skipped = "gnuplot failed (" + (fs::path(s.dir) / "report-gnuplot.log").string() + " says why)";
    plots.clear();
  }
  return plots;
}

}  // namespace shoestring::sweep
