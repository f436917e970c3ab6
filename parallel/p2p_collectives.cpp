// Shared pieces of the point-to-point collectives: size thresholds and the split messages.
#include <algorithm>
#include <cstdlib>

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

}  // namespace

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
