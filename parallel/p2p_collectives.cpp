// Shared pieces of the point-to-point collectives: size thresholds and the split messages.
#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <new>
#include <tuple>
#include <utility>
#include <vector>

#include "parallel/mpi_group.h"
#include "parallel/p2p_collectives.h"

namespace shoestring::parallel {

namespace {

int64_t env_bytes(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v && std::atoll(v) > 0 ? int64_t(std::atoll(v)) : fallback;
}

void post(bool is_send, char* p, int64_t elems, int peer, MPI_Datatype dt, int64_t esz, MPI_Comm comm, int tag,
          std::vector<MPI_Request>& reqs) {
  if (peer < 0) return;
  const int64_t chunk = mpi_chunk_elems();
  int64_t off = 0;
  do {  // at least one message, even an empty one: the peer posts the matching one
    const int cnt = int(std::min(chunk, elems - off));
    reqs.emplace_back();
    if (is_send) MPI_Isend(p + off * esz, cnt, dt, peer, tag, comm, &reqs.back());
    else MPI_Irecv(p + off * esz, cnt, dt, peer, tag, comm, &reqs.back());
    off += cnt;
  } while (off < elems);
}

// The free receive buffers (Scratch): a handful, each at most kScratchCacheMax bytes. Leaked on
// purpose: a ring still held at exit must not find the cache destroyed.
constexpr size_t kScratchCacheMax = size_t(16) << 20, kScratchCached = 8;
struct ScratchCache {
  std::mutex mu;
  std::vector<std::pair<char*, size_t>> free;
};
ScratchCache& scratch_cache() {
  static ScratchCache* c = new ScratchCache();
  return *c;
}

char* scratch_new(size_t bytes) { return static_cast<char*>(::operator new(bytes, std::align_val_t(64))); }
void scratch_delete(char* p) { ::operator delete(p, std::align_val_t(64)); }

}  // namespace

Scratch::Scratch(size_t bytes) : bytes_(std::max<size_t>(bytes, 1)) {
  {
    ScratchCache& c = scratch_cache();
    const std::lock_guard lock(c.mu);
    // The smallest free buffer that fits.
    auto best = c.free.end();
    for (auto it = c.free.begin(); it != c.free.end(); ++it)
      if (it->second >= bytes_ && (best == c.free.end() || it->second < best->second)) best = it;
    if (best != c.free.end()) {
      std::tie(data_, bytes_) = *best;
      c.free.erase(best);
      return;
    }
  }
  data_ = scratch_new(bytes_);
}

Scratch::~Scratch() {
  if (bytes_ <= kScratchCacheMax) {
    ScratchCache& c = scratch_cache();
    const std::lock_guard lock(c.mu);
    if (c.free.size() < kScratchCached) {
      c.free.emplace_back(data_, bytes_);
      return;
    }
  }
  scratch_delete(data_);
}

int64_t ring_min_bytes() {
  static const int64_t n = env_bytes("SHOESTRING_MPI_RING_MIN_BYTES", int64_t(256) << 10);
  return n;
}

int64_t segment_bytes() {
  static const int64_t n = env_bytes("SHOESTRING_MPI_SEGMENT_BYTES", int64_t(1) << 20);
  return n;
}

void post_exchange(void* send, int64_t send_elems, int to, void* recv, int64_t recv_elems, int from, MPI_Datatype dt,
                   int64_t elem_bytes, MPI_Comm comm, int tag, std::vector<MPI_Request>& reqs) {
  // Receive first, so the peer's send finds its match already posted.
  post(false, static_cast<char*>(recv), recv_elems, from, dt, elem_bytes, comm, tag, reqs);
  post(true, static_cast<char*>(send), send_elems, to, dt, elem_bytes, comm, tag, reqs);
}

}  // namespace shoestring::parallel
