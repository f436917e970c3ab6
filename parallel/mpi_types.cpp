#include "parallel/mpi_types.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <stdexcept>

namespace shoestring::parallel {

namespace {

MPI_Datatype g_bf16 = MPI_DATATYPE_NULL, g_fp16 = MPI_DATATYPE_NULL;
// [half type: 0 bf16, 1 fp16][ReduceOp]
MPI_Op g_half_ops[2][3] = {{MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL}, {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL}};

struct Add {
  float operator()(float a, float b) const { return a + b; }
};
struct Max {
  float operator()(float a, float b) const { return std::max(a, b); }
};
struct Min {
  float operator()(float a, float b) const { return std::min(a, b); }
};

template <class T, class F>
void reduce_half(void* in, void* inout, int* len, MPI_Datatype*) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  const F f;
  for (int i = 0; i < *len; ++i) b[i] = T(f(float(a[i]), float(b[i])));
}

template <class T>
void create_ops(MPI_Op* ops) {
  MPI_Op_create(&reduce_half<T, Add>, 1, &ops[int(ReduceOp::Sum)]);
  MPI_Op_create(&reduce_half<T, Max>, 1, &ops[int(ReduceOp::Max)]);
  MPI_Op_create(&reduce_half<T, Min>, 1, &ops[int(ReduceOp::Min)]);
}

}  // namespace

void init_mpi_types() {
  if (g_bf16 != MPI_DATATYPE_NULL) return;
  MPI_Type_contiguous(2, MPI_BYTE, &g_bf16);
  MPI_Type_commit(&g_bf16);
  MPI_Type_contiguous(2, MPI_BYTE, &g_fp16);
  MPI_Type_commit(&g_fp16);
  create_ops<c10::BFloat16>(g_half_ops[0]);
  create_ops<c10::Half>(g_half_ops[1]);
}

void free_mpi_types() {
  if (g_bf16 == MPI_DATATYPE_NULL) return;
  MPI_Type_free(&g_bf16);
  MPI_Type_free(&g_fp16);
  for (auto& ops : g_half_ops)
    for (auto& op : ops) MPI_Op_free(&op);
}

bool mpi_supports(at::ScalarType t) {
  switch (t) {
    case at::kFloat: case at::kDouble: case at::kBFloat16: case at::kHalf:
    case at::kLong: case at::kInt: case at::kByte:
      return true;
    default:
      return false;
  }
}

MPI_Datatype mpi_datatype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kBFloat16: return g_bf16;
    case at::kHalf: return g_fp16;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    case at::kByte: return MPI_UINT8_T;
    default: throw std::invalid_argument(std::string("no MPI datatype for ") + c10::toString(t));
  }
}

MPI_Op mpi_reduce_op(ReduceOp op, at::ScalarType t) {
  if (t == at::kBFloat16) return g_half_ops[0][int(op)];
  if (t == at::kHalf) return g_half_ops[1][int(op)];
  switch (op) {
    case ReduceOp::Sum: return MPI_SUM;
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
  }
  return "?";
}

}  // namespace shoestring::parallel
