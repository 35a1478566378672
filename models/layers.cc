#include "models/layers.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/ops.h"
#include "models/gpt_params.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

float* F(const Tensor& t) { return t.as<float>(); }
const int32_t* I(const Tensor& t) { return t.as<int32_t>(); }

// A stream-ordered collective's immediate status: validation errors, and on
// the cpu device (where the op has completed) its result. Errors of an op
// still in flight surface on the stream.
absl::Status Issued(const Work& w) { return w.Test() ? w.Wait() : absl::OkStatus(); }

}  // namespace

LayerContext::LayerContext(const GptConfig& c, const GptPlace& place, Communicator& tp,
                           Stream& stream, MemoryTracker* tracker, int threads)
    : config_(c), place_(place), tp_(tp), stream_(stream), tracker_(tracker), threads_(threads) {}

absl::StatusOr<Tensor> LayerContext::New(Shape shape, MemCategory category, DType dtype) const {
  return Tensor::Empty(device(), dtype, std::move(shape), category, tracker_, &stream_);
}

absl::StatusOr<Tensor> LayerContext::Zeros(Shape shape, MemCategory category) const {
  ASSIGN_OR_RETURN(Tensor t, New(std::move(shape), category));
  RETURN_IF_ERROR(kernels::Memset(stream_, t.data(), t.bytes()));
  return t;
}

absl::StatusOr<Tensor> LayerContext::Copy(const Tensor& t, MemCategory category) const {
  ASSIGN_OR_RETURN(Tensor c, New(t.shape(), category, t.dtype()));
  RETURN_IF_ERROR(kernels::Copy(stream_, c.data(), t.data(), t.bytes()));
  return c;
}

absl::StatusOr<Tensor> LayerContext::GatherRows(const Tensor& local, MemCategory category) const {
  if (!seq_parallel()) return local;
  ASSIGN_OR_RETURN(Tensor full, New({tokens(), local.numel() / rows()}, category));
  RETURN_IF_ERROR(Issued(tp_.AllGatherAsync(local.view(), full.view(), &stream_)));
  return full;
}

absl::StatusOr<Tensor> LayerContext::ReduceRows(const Tensor& partial, MemCategory category) const {
  if (!seq_parallel()) {
    RETURN_IF_ERROR(SumOverTp(partial));
    return partial;
  }
  ASSIGN_OR_RETURN(Tensor local, New({rows(), partial.numel() / tokens()}, category));
  RETURN_IF_ERROR(
      Issued(tp_.ReduceScatterAsync(partial.view(), local.view(), ReduceOp::kSum, &stream_)));
  return local;
}

absl::Status LayerContext::SumOverTp(const Tensor& t) const {
  if (tp_.size() == 1) return absl::OkStatus();
  return Issued(tp_.AllReduceAsync(t.view(), t.view(), ReduceOp::kSum, &stream_));
}

absl::Status LayerContext::AddReplicatedGrad(const Tensor& grad, const Tensor& contribution) const {
  if (seq_parallel()) RETURN_IF_ERROR(SumOverTp(contribution));
  return kernels::Add(stream_, F(grad), F(contribution), grad.numel(), F(grad), threads_);
}

absl::Status LayerContext::SumOverKvSharers(const Tensor& t) const {
  const int kv = config_.kv(), tp = place_.tp;
  if (kv >= tp) return absl::OkStatus();  // heads split: nobody shares
  // Each rank places its contribution in its head's slot of a [kv, n] buffer
  // of zeros; the sum over TP adds exactly the sharers of each head.
  const int64_t n = t.numel(), slot = FirstKvHead(config_, tp, place_.tp_rank);
  ASSIGN_OR_RETURN(Tensor all, Zeros({kv, n}, MemCategory::kWorkspace));
  float* mine = all.as<float>() + slot * n;
  RETURN_IF_ERROR(kernels::Copy(stream_, mine, t.data(), n * 4));
  RETURN_IF_ERROR(SumOverTp(all));
  return kernels::Copy(stream_, t.data(), mine, n * 4);
}

// ---- normalisation -------------------------------------------------------------------

int64_t Norm::StatsPerRow(const GptConfig& c) { return c.norm == NormKind::kRmsNorm ? 1 : 2; }

absl::Status Norm::Forward(const LayerContext& ctx, const Tensor& x, const Tensor& gamma,
                           const Tensor& beta, MemCategory saved, const Tensor& y,
                           NormSaved* stats) {
  const int64_t rows = x.numel() / ctx.hidden();
  const float eps = ctx.config().ln_eps;
  ASSIGN_OR_RETURN(stats->rstd, ctx.New({rows}, saved));
  if (ctx.config().norm == NormKind::kRmsNorm) {
    return kernels::RmsNormForward(ctx.stream(), F(x), F(gamma), rows, ctx.hidden(), eps, F(y),
                                   F(stats->rstd), ctx.threads());
  }
  ASSIGN_OR_RETURN(stats->mean, ctx.New({rows}, saved));
  return kernels::LayerNormForward(ctx.stream(), F(x), F(gamma), F(beta), rows, ctx.hidden(), eps,
                                   F(y), F(stats->mean), F(stats->rstd), ctx.threads());
}

absl::Status Norm::Backward(const LayerContext& ctx, const Tensor& dy, const Tensor& x,
                            const Tensor& gamma, const NormSaved& stats, const Tensor& dgamma,
                            const Tensor& dbeta, const Tensor& dx) {
  const int64_t C = ctx.hidden(), rows = x.numel() / C;
  // The parameters are replicated: this rank's contribution first.
  ASSIGN_OR_RETURN(Tensor g, ctx.Zeros({C}, MemCategory::kWorkspace));
  if (ctx.config().norm == NormKind::kRmsNorm) {
    RETURN_IF_ERROR(kernels::RmsNormBackward(ctx.stream(), F(dy), F(x), F(gamma), F(stats.rstd),
                                             rows, C, F(dx), F(g), ctx.threads()));
    return ctx.AddReplicatedGrad(dgamma, g);
  }
  ASSIGN_OR_RETURN(Tensor b, ctx.Zeros({C}, MemCategory::kWorkspace));
  RETURN_IF_ERROR(kernels::LayerNormBackward(ctx.stream(), F(dy), F(x), F(gamma), F(stats.mean),
                                             F(stats.rstd), rows, C, F(dx), F(g), F(b),
                                             ctx.threads()));
  RETURN_IF_ERROR(ctx.AddReplicatedGrad(dgamma, g));
  return ctx.AddReplicatedGrad(dbeta, b);
}

// ---- linear layers -------------------------------------------------------------------

absl::Status ColumnParallelLinear::Forward(const LayerContext& ctx, const Tensor& x,
                                           const Tensor& w, const Tensor& b, const Tensor& y) {
  const int64_t N = ctx.tokens(), in = w.dim(0), out = w.dim(1);
  RETURN_IF_ERROR(kernels::Gemm(ctx.stream(), false, false, N, out, in, 1.0f, F(x), in, F(w), out,
                                0.0f, F(y), out));
  if (!b.defined()) return absl::OkStatus();
  return kernels::AddBias(ctx.stream(), F(y), F(b), N, out, ctx.threads());
}

absl::Status ColumnParallelLinear::Backward(const LayerContext& ctx, const Tensor& x,
                                            const Tensor& w, const Tensor& dy, const Tensor& dw,
                                            const Tensor& db, const Tensor& dx_partial,
                                            bool accumulate) {
  const int64_t N = ctx.tokens(), in = w.dim(0), out = w.dim(1);
  Stream& s = ctx.stream();
  RETURN_IF_ERROR(
      kernels::Gemm(s, true, false, in, out, N, 1.0f, F(x), in, F(dy), out, 1.0f, F(dw), out));
  if (db.defined()) RETURN_IF_ERROR(kernels::AddColumnSums(s, F(dy), N, out, F(db), ctx.threads()));
  return kernels::Gemm(s, false, true, N, in, out, 1.0f, F(dy), out, F(w), out,
                       accumulate ? 1.0f : 0.0f, F(dx_partial), in);
}

absl::Status RowParallelLinear::Forward(const LayerContext& ctx, const Tensor& x, const Tensor& w,
                                        const Tensor& y_partial) {
  const int64_t N = ctx.tokens(), in = w.dim(0), out = w.dim(1);
  return kernels::Gemm(ctx.stream(), false, false, N, out, in, 1.0f, F(x), in, F(w), out, 0.0f,
                       F(y_partial), out);
}

absl::Status RowParallelLinear::Backward(const LayerContext& ctx, const Tensor& x, const Tensor& w,
                                         const Tensor& dy, const Tensor& dw, const Tensor& dx) {
  const int64_t N = ctx.tokens(), in = w.dim(0), out = w.dim(1);
  Stream& s = ctx.stream();
  RETURN_IF_ERROR(
      kernels::Gemm(s, true, false, in, out, N, 1.0f, F(x), in, F(dy), out, 1.0f, F(dw), out));
  return kernels::Gemm(s, false, true, N, in, out, 1.0f, F(dy), out, F(w), out, 0.0f, F(dx), in);
}

// ---- attention ------------------------------------------------------------------------

QkvColumns QkvColumns::Of(const LayerContext& ctx, const Tensor& qkv, const Tensor& q,
                          const Tensor& kv) {
  const int64_t Cl = ctx.local_width(), W = ctx.local_kv_width();
  if (qkv.defined()) return {{qkv, 3 * Cl, 0}, {qkv, 3 * Cl, Cl}, {qkv, 3 * Cl, 2 * Cl}};
  return {{q, Cl, 0}, {kv, 2 * W, 0}, {kv, 2 * W, W}};
}

namespace {

// The attention call's shape over this rank's query heads, and its key/value
// heads' shape.
kernels::AttentionShape QueryShape(const LayerContext& ctx) {
  const GptConfig& c = ctx.config();
  return {c.micro_batch, ctx.local_heads(), c.seq, ctx.head_dim(), c.sliding_window};
}
kernels::AttentionShape KvShape(const LayerContext& ctx) {
  kernels::AttentionShape s = QueryShape(ctx);
  s.heads = ctx.local_kv();
  return s;
}

// k or v of the query heads: the tensor itself, or (GQA) each key/value head
// repeated for its group of query heads, in a workspace tensor.
absl::StatusOr<Tensor> PerQueryHead(const LayerContext& ctx, const Tensor& kv) {
  if (ctx.local_kv() == ctx.local_heads()) return kv;
  const kernels::AttentionShape q = QueryShape(ctx);
  ASSIGN_OR_RETURN(Tensor out,
                   ctx.New({q.batch, q.heads, q.seq, q.head_dim}, MemCategory::kWorkspace));
  RETURN_IF_ERROR(
      kernels::RepeatKvHeads(ctx.stream(), F(kv), q, ctx.local_kv(), F(out), ctx.threads()));
  return out;
}

absl::Status Rotate(const LayerContext& ctx, const Tensor& heads, const kernels::AttentionShape& sh,
                    bool inverse) {
  if (ctx.config().position != PositionKind::kRope) return absl::OkStatus();
  return kernels::Rotary(ctx.stream(), F(heads), sh, 0, ctx.config().rope_base, inverse,
                         ctx.threads());
}

}  // namespace

absl::Status CausalSelfAttention::Forward(const LayerContext& ctx, const QkvColumns& in,
                                          MemCategory saved, AttentionSaved* a, const Tensor& att) {
  const kernels::AttentionShape shape = QueryShape(ctx), kv = KvShape(ctx);
  const int64_t B = shape.batch, H = shape.heads, T = shape.seq, D = shape.head_dim;
  const int64_t Cl = ctx.local_width(), N = ctx.tokens();
  Stream& s = ctx.stream();
  ASSIGN_OR_RETURN(a->q, ctx.New({B, H, T, D}, saved));
  ASSIGN_OR_RETURN(a->k, ctx.New({B, kv.heads, T, D}, saved));
  ASSIGN_OR_RETURN(a->v, ctx.New({B, kv.heads, T, D}, saved));
  ASSIGN_OR_RETURN(a->probs, ctx.New({B, H, T, T}, saved));
  const int t = ctx.threads();
  RETURN_IF_ERROR(kernels::RowsToHeads(s, F(in.q.rows), in.q.ld, in.q.col, shape, F(a->q), t));
  RETURN_IF_ERROR(kernels::RowsToHeads(s, F(in.k.rows), in.k.ld, in.k.col, kv, F(a->k), t));
  RETURN_IF_ERROR(kernels::RowsToHeads(s, F(in.v.rows), in.v.ld, in.v.col, kv, F(a->v), t));
  RETURN_IF_ERROR(Rotate(ctx, a->q, shape, false));
  RETURN_IF_ERROR(Rotate(ctx, a->k, kv, false));
  ASSIGN_OR_RETURN(Tensor k, PerQueryHead(ctx, a->k));
  ASSIGN_OR_RETURN(Tensor v, PerQueryHead(ctx, a->v));
  ASSIGN_OR_RETURN(Tensor out_heads, ctx.New({N, Cl}, MemCategory::kWorkspace));
  RETURN_IF_ERROR(
      kernels::CausalAttentionForward(s, shape, F(a->q), F(k), F(v), F(a->probs), F(out_heads)));
  return kernels::HeadsToRows(s, F(out_heads), shape, F(att), Cl, 0, t);
}

absl::Status CausalSelfAttention::Backward(const LayerContext& ctx, const AttentionSaved& a,
                                           const Tensor& datt, const QkvColumns& out) {
  const kernels::AttentionShape shape = QueryShape(ctx), kv = KvShape(ctx);
  const int64_t B = shape.batch, H = shape.heads, T = shape.seq, D = shape.head_dim;
  const int64_t Cl = ctx.local_width(), N = ctx.tokens();
  Stream& s = ctx.stream();
  const MemCategory ws = MemCategory::kWorkspace;
  const int t = ctx.threads();
  ASSIGN_OR_RETURN(Tensor datt_heads, ctx.New({B, H, T, D}, ws));
  RETURN_IF_ERROR(kernels::RowsToHeads(s, F(datt), Cl, 0, shape, F(datt_heads), t));
  ASSIGN_OR_RETURN(Tensor work, ctx.New({kernels::AttentionWorkspaceFloats(s, shape)}, ws));
  ASSIGN_OR_RETURN(Tensor k, PerQueryHead(ctx, a.k));
  ASSIGN_OR_RETURN(Tensor v, PerQueryHead(ctx, a.v));
  ASSIGN_OR_RETURN(Tensor dq, ctx.New({N, Cl}, ws));
  ASSIGN_OR_RETURN(Tensor dk, ctx.New({N, Cl}, ws));
  ASSIGN_OR_RETURN(Tensor dv, ctx.New({N, Cl}, ws));
  RETURN_IF_ERROR(kernels::CausalAttentionBackward(s, shape, F(a.q), F(k), F(v), F(a.probs),
                                                   F(datt_heads), F(work), F(dq), F(dk), F(dv)));
  if (ctx.local_kv() != ctx.local_heads()) {  // each key/value head: its group's sum
    Tensor per_query_dk = dk, per_query_dv = dv;
    ASSIGN_OR_RETURN(dk, ctx.New({B, kv.heads, T, D}, ws));
    ASSIGN_OR_RETURN(dv, ctx.New({B, kv.heads, T, D}, ws));
    RETURN_IF_ERROR(kernels::SumKvHeads(s, F(per_query_dk), shape, kv.heads, F(dk), ctx.threads()));
    RETURN_IF_ERROR(kernels::SumKvHeads(s, F(per_query_dv), shape, kv.heads, F(dv), ctx.threads()));
  }
  RETURN_IF_ERROR(Rotate(ctx, dq, shape, true));
  RETURN_IF_ERROR(Rotate(ctx, dk, kv, true));
  RETURN_IF_ERROR(kernels::HeadsToRows(s, F(dq), shape, F(out.q.rows), out.q.ld, out.q.col, t));
  RETURN_IF_ERROR(kernels::HeadsToRows(s, F(dk), kv, F(out.k.rows), out.k.ld, out.k.col, t));
  return kernels::HeadsToRows(s, F(dv), kv, F(out.v.rows), out.v.ld, out.v.col, t);
}

// ---- embedding ---------------------------------------------------------------------------

absl::Status VocabParallelEmbedding::CheckIds(const LayerContext& ctx,
                                              const std::vector<int32_t>& ids) {
  for (size_t r = 0; r < ids.size(); ++r) {
    if (ids[r] < 0 || ids[r] >= ctx.config().vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token ", ids[r], " at position ", r,
                                                     " is outside the vocabulary of ",
                                                     ctx.config().vocab));
    }
  }
  return absl::OkStatus();
}

absl::Status VocabParallelEmbedding::Forward(const LayerContext& ctx, const Tensor& wte,
                                             const Tensor& wpe, const Tensor& ids,
                                             MemCategory out_category, Tensor* x) {
  const int64_t N = ctx.tokens(), C = ctx.hidden(), Vl = wte.dim(0);
  const int64_t lo = ctx.place().tp_rank * Vl;
  // Without SP the summed rows are the output itself.
  ASSIGN_OR_RETURN(Tensor rows,
                   ctx.New({N, C}, ctx.seq_parallel() ? MemCategory::kWorkspace : out_category));
  RETURN_IF_ERROR(
      kernels::EmbeddingForwardRange(ctx.stream(), F(wte), I(ids), N, lo, Vl, C, F(rows)));
  ASSIGN_OR_RETURN(*x, ctx.ReduceRows(rows, out_category));  // this rank's rows, summed
  if (!wpe.defined()) return absl::OkStatus();
  return kernels::AddPositions(ctx.stream(), F(*x), F(wpe), ctx.rows(), ctx.first_row(),
                               ctx.config().seq, C);
}

absl::Status VocabParallelEmbedding::Backward(const LayerContext& ctx, const Tensor& ids,
                                              const Tensor& dx, const Tensor& dwte,
                                              const Tensor& dwpe) {
  const int64_t N = ctx.tokens(), C = ctx.hidden(), Vl = dwte.dim(0);
  // Both embeddings need every row's gradient (the same on all TP ranks).
  ASSIGN_OR_RETURN(Tensor full, ctx.GatherRows(dx, MemCategory::kWorkspace));
  if (dwpe.defined()) {
    RETURN_IF_ERROR(
        kernels::AddPositionsBackward(ctx.stream(), F(full), N, 0, ctx.config().seq, C, F(dwpe)));
  }
  return kernels::EmbeddingBackwardRange(ctx.stream(), F(full), I(ids), N, ctx.place().tp_rank * Vl,
                                         Vl, C, F(dwte));
}

// ---- head and loss --------------------------------------------------------------------------

namespace {

// This rank's vocabulary rows that are real (the rest is padding).
int64_t ValidColumns(const LayerContext& ctx, int64_t Vl) {
  const int64_t lo = ctx.place().tp_rank * Vl;
  return std::max<int64_t>(0, std::min(Vl, ctx.config().vocab - lo));
}

}  // namespace

absl::Status VocabParallelCrossEntropy::Forward(const LayerContext& ctx, const Tensor& h,
                                                const Tensor& head, const Tensor& targets,
                                                CrossEntropySaved* s, double* loss) {
  const int64_t N = ctx.tokens(), C = ctx.hidden(), Vl = head.dim(0);
  const int64_t lo = ctx.place().tp_rank * Vl, valid = ValidColumns(ctx, Vl);
  Stream& st = ctx.stream();
  const MemCategory act = MemCategory::kActivation, ws = MemCategory::kWorkspace;
  ASSIGN_OR_RETURN(s->logits, ctx.New({N, Vl}, act));
  ASSIGN_OR_RETURN(s->lse, ctx.New({N}, act));
  RETURN_IF_ERROR(
      kernels::Gemm(st, false, true, N, Vl, C, 1.0f, F(h), C, F(head), C, 0.0f, F(s->logits), Vl));
  // The row max, the sum of exponentials and the target logit, over TP.
  ASSIGN_OR_RETURN(Tensor row_max, ctx.New({N}, ws));
  ASSIGN_OR_RETURN(Tensor sum_exp, ctx.New({N}, ws));
  ASSIGN_OR_RETURN(Tensor target, ctx.New({N}, ws));
  RETURN_IF_ERROR(kernels::CrossEntropyRowMax(st, F(s->logits), N, Vl, valid, F(row_max)));
  if (ctx.tp().size() > 1) {
    RETURN_IF_ERROR(
        Issued(ctx.tp().AllReduceAsync(row_max.view(), row_max.view(), ReduceOp::kMax, &st)));
  }
  RETURN_IF_ERROR(
      kernels::CrossEntropySumExp(st, F(s->logits), F(row_max), N, Vl, valid, F(sum_exp)));
  RETURN_IF_ERROR(
      kernels::CrossEntropyTargetLogit(st, F(s->logits), I(targets), N, Vl, lo, valid, F(target)));
  RETURN_IF_ERROR(ctx.SumOverTp(sum_exp));
  RETURN_IF_ERROR(ctx.SumOverTp(target));
  return kernels::CrossEntropyLoss(st, F(row_max), F(sum_exp), F(target), N, F(s->lse), loss);
}

absl::Status VocabParallelCrossEntropy::Backward(const LayerContext& ctx, const Tensor& h,
                                                 const Tensor& head, const Tensor& targets,
                                                 const CrossEntropySaved& s, float scale,
                                                 const Tensor& dhead, const Tensor& dh_partial) {
  const int64_t N = ctx.tokens(), C = ctx.hidden(), Vl = head.dim(0);
  const int64_t lo = ctx.place().tp_rank * Vl, valid = ValidColumns(ctx, Vl);
  Stream& st = ctx.stream();
  ASSIGN_OR_RETURN(Tensor dlogits, ctx.New({N, Vl}, MemCategory::kWorkspace));
  RETURN_IF_ERROR(kernels::CrossEntropyBackwardRange(st, F(s.logits), I(targets), F(s.lse), N, Vl,
                                                     lo, valid, scale, F(dlogits)));
  RETURN_IF_ERROR(
      kernels::Gemm(st, true, false, Vl, C, N, 1.0f, F(dlogits), Vl, F(h), C, 1.0f, F(dhead), C));
  return kernels::Gemm(st, false, false, N, C, Vl, 1.0f, F(dlogits), Vl, F(head), C, 0.0f,
                       F(dh_partial), C);
}

}  // namespace trireme
