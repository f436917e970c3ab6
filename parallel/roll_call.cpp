// The watchdog half of the comm thread: timeouts and the roll call that names who is missing.
// Protocol on the engine's private duplicate of MPI_COMM_WORLD: tag 1 "what are you waiting on in
// group <id>?" (one uint64), tag 2 the answer (an Answer struct as bytes). Answers are served by
// every comm thread between polls, so a rank whose user thread hangs still answers ("idle"),
// while a dead rank or one stuck inside MPI does not.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "parallel/comm_thread.h"
#include "parallel/process_group.h"

namespace shoestring::parallel {

namespace {

constexpr int kPingTag = 1, kAnswerTag = 2;

enum AnswerKind : int32_t { kIdle = 0, kInGroup = 1, kElsewhere = 2 };

struct Answer {
  int32_t kind = kIdle;
  int32_t unused = 0;
  int64_t seq = 0;
  char op[24] = {};
  char group[40] = {};
};

void copy_name(char* dst, size_t n, const std::string& s) {
  std::strncpy(dst, s.c_str(), n - 1);
  dst[n - 1] = '\0';
}

// "0-3,5,7": world ranks, runs compressed so that a 1024-rank group stays one line.
std::string rank_list(std::vector<int> r) {
  std::sort(r.begin(), r.end());
  std::string s;
  for (size_t i = 0; i < r.size();) {
    size_t j = i;
    while (j + 1 < r.size() && r[j + 1] == r[j] + 1) ++j;
    if (!s.empty()) s += ",";
    s += std::to_string(r[i]);
    if (j > i) s += (j == i + 1 ? "," : "-") + std::to_string(r[j]);
    i = j + 1;
  }
  return s;
}

std::string ranks_phrase(const std::vector<int>& r) { return (r.size() == 1 ? "rank " : "ranks ") + rank_list(r); }

// How long the stuck rank collects answers: short next to the timeout, long enough for a
// comm thread that sleeps between idle polls.
double grace_s(double timeout_s) { return std::clamp(timeout_s / 4, 0.3, 5.0); }

}  // namespace

struct CommEngine::RollCall {
  std::shared_ptr<CommOp> op;
  double deadline = 0;
  bool deferred = false;
  uint64_t question = 0;
  std::vector<int> peers;  // world ranks asked
  std::vector<Answer> answers;
  std::vector<MPI_Request> recvs, sends;
  std::vector<char> answered;
};

void CommEngine::answer_ping(int from, uint64_t group_id) {
  Answer a;
  // The oldest operation in flight on the asked group is the one its members wait on.
  const CommOp* mine = nullptr;
  for (const auto& op : inflight_)
    if (op->group_id == group_id) {
      mine = op.get();
      break;
    }
  if (!mine)
    for (const auto& op : inflight_)
      if (op->group_id != 0) {
        mine = op.get();
        break;
      }
  if (mine) {
    a.kind = mine->group_id == group_id ? kInGroup : kElsewhere;
    a.seq = mine->seq;
    copy_name(a.op, sizeof a.op, mine->name);
    copy_name(a.group, sizeof a.group, mine->group);
  }
  std::unique_ptr<char[]> buf(new char[sizeof a]);
  std::memcpy(buf.get(), &a, sizeof a);
  MPI_Request req;
  MPI_Isend(buf.get(), int(sizeof a), MPI_BYTE, from, kAnswerTag, ctl_, &req);
  answers_.emplace_back(std::move(buf), req);
}

void CommEngine::serve_roll_call() {
  for (;;) {
    int flag = 0;
    MPI_Status st;
    MPI_Test(&ping_req_, &flag, &st);
    if (!flag) break;
    answer_ping(st.MPI_SOURCE, ping_buf_[0]);
    MPI_Irecv(ping_buf_, 1, MPI_UINT64_T, MPI_ANY_SOURCE, kPingTag, ctl_, &ping_req_);
  }
  for (size_t i = 0; i < answers_.size();) {
    int flag = 0;
    MPI_Test(&answers_[i].second, &flag, MPI_STATUS_IGNORE);
    if (flag) answers_.erase(answers_.begin() + long(i));
    else ++i;
  }
  if (!roll_) return;
  for (size_t i = 0; i < roll_->recvs.size(); ++i) {
    if (roll_->answered[i]) continue;
    int flag = 0;
    MPI_Test(&roll_->recvs[i], &flag, MPI_STATUS_IGNORE);
    roll_->answered[i] = char(flag);
  }
  const double now = steady_seconds();
  const bool all = std::all_of(roll_->answered.begin(), roll_->answered.end(), [](char c) { return c != 0; });
  if (now > roll_->deadline || (all && !roll_->deferred)) finish_roll_call(now);
}

void CommEngine::check_timeouts() {
  if (roll_) return;
  const double now = steady_seconds();
  for (const auto& op : inflight_)
    if (op->group_id != 0 && op->timeout_s > 0 && now - op->issued_at > op->timeout_s) {
      begin_roll_call(op, now);
      return;
    }
}

void CommEngine::begin_roll_call(const std::shared_ptr<CommOp>& op, double now) {
  roll_ = std::make_shared<RollCall>();
  RollCall& r = *roll_;
  r.op = op;
  r.deadline = now + grace_s(op->timeout_s);
  r.question = op->group_id;
  for (int w : op->world_ranks)
    if (w != world_rank_) r.peers.push_back(w);
  r.answers.resize(r.peers.size());
  r.recvs.resize(r.peers.size());
  r.sends.resize(r.peers.size());
  r.answered.assign(r.peers.size(), 0);
  for (size_t i = 0; i < r.peers.size(); ++i) {
    MPI_Irecv(&r.answers[i], int(sizeof(Answer)), MPI_BYTE, r.peers[i], kAnswerTag, ctl_, &r.recvs[i]);
    MPI_Isend(&r.question, 1, MPI_UINT64_T, r.peers[i], kPingTag, ctl_, &r.sends[i]);
  }
}

void CommEngine::finish_roll_call(double now) {
  RollCall& r = *roll_;
  const CommOp& op = *r.op;
  std::vector<int> waiting{world_rank_}, idle, silent;
  std::string elsewhere;
  bool lower_waiting = false;
  for (size_t i = 0; i < r.peers.size(); ++i) {
    const int w = r.peers[i];
    if (!r.answered[i]) {
      silent.push_back(w);
      continue;
    }
    const Answer& a = r.answers[i];
    if (a.kind == kInGroup && a.seq == op.seq && op.name == a.op) {
      waiting.push_back(w);
      lower_waiting |= w < world_rank_;
    } else if (a.kind == kIdle) {
      idle.push_back(w);
    } else {
      elsewhere += (elsewhere.empty() ? "" : ", ") + std::string("rank ") + std::to_string(w) + " in " + a.op +
                   " #" + std::to_string(a.seq) + " on group " + a.group;
    }
  }
  // Every waiting member times out at about the same moment; let the lowest one speak so the job
  // log holds one report, and speak anyway if the job is still alive a grace period later.
  if (lower_waiting && !r.deferred) {
    r.deferred = true;
    r.deadline = now + grace_s(op.timeout_s) + 1;
    return;
  }
  std::string line = "[rank " + std::to_string(world_rank_) + "] comm timeout: " + op.name + " #" +
                     std::to_string(op.seq) + " on group " + op.group + " (world ranks " + rank_list(op.world_ranks) +
                     ") did not finish in " + std::to_string(int(op.timeout_s + 0.5)) + " s; waiting in it: " +
                     ranks_phrase(waiting);
  if (!elsewhere.empty()) line += "; in another operation (mismatched collectives?): " + elsewhere;
  if (!idle.empty()) line += "; not in communication: " + ranks_phrase(idle) + " (hung or busy outside communication)";
  if (!silent.empty()) line += "; not responding: " + ranks_phrase(silent) + " (dead, or stuck inside MPI)";
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, kTimeoutExitCode);
}

}  // namespace shoestring::parallel
