// ktsa/kernels/detail/checks.hpp: argument checks and label preparation shared
// by the host log-prob and KL kernels.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/core/half.hpp"
#include "ktsa/core/view.hpp"
#include "ktsa/kernels/options.hpp"

namespace ktsa::kernels::detail {

using ktsa::detail::concat;

template <class T>
inline constexpr bool is_logit_type_v =
    std::is_same_v<std::remove_cv_t<T>, float> || std::is_same_v<std::remove_cv_t<T>, f16> ||
    std::is_same_v<std::remove_cv_t<T>, bf16>;

template <class T>
inline constexpr bool is_label_type_v = std::is_same_v<std::remove_cv_t<T>, std::int32_t> ||
                                        std::is_same_v<std::remove_cv_t<T>, std::int64_t>;

template <class T>
inline constexpr bool is_real_output_v = std::is_same_v<T, float> || std::is_same_v<T, double>;

// ---------------------------------------------------------------- sizes
//
// Every product of a caller's numbers (shape x stride x element size, B x T)
// is formed with overflow checks before any memory is touched or allocated:
// an overflow is a shape_error naming the view, never wrapped pointer
// arithmetic or a std::length_error from an allocation.

/// a * b into out; false on int64 overflow.
inline bool checked_mul(index_t a, index_t b, index_t& out) {
#if defined(__GNUC__) || defined(__clang__)
  return !__builtin_mul_overflow(a, b, &out);
#else
  if (a != 0 && b != 0) {
    const index_t mx = std::numeric_limits<index_t>::max(),
                  mn = std::numeric_limits<index_t>::min();
    if ((a > 0 && b > 0 && a > mx / b) || (a < 0 && b < 0 && a < mx / b) ||
        (a > 0 && b < 0 && b < mn / a) || (a < 0 && b > 0 && a < mn / b))
      return false;
  }
  out = a * b;
  return true;
#endif
}
inline bool checked_add(index_t a, index_t b, index_t& out) {
#if defined(__GNUC__) || defined(__clang__)
  return !__builtin_add_overflow(a, b, &out);
#else
  if ((b > 0 && a > std::numeric_limits<index_t>::max() - b) ||
      (b < 0 && a < std::numeric_limits<index_t>::min() - b))
    return false;
  out = a + b;
  return true;
#endif
}

template <class V>
std::string describe_view(const V& v) {
  std::string s = "shape [";
  for (int d = 0; d < V::rank; ++d) s += concat(d ? ", " : "", v.extent(d));
  s += "], strides [";
  for (int d = 0; d < V::rank; ++d) s += concat(d ? ", " : "", v.stride(d));
  return s + concat("], ", sizeof(typename V::value_type), "-byte elements");
}

/// Number of elements of a view, checked: negative extents and products past
/// 2^63 are shape_errors.
template <class V>
index_t checked_size(const V& v, const char* name) {
  index_t n = 1;
  for (int d = 0; d < V::rank; ++d) {
    if (v.extent(d) < 0)
      throw shape_error(
          concat("ktsa: '", name, "' has negative extent ", v.extent(d), " in dimension ", d));
    if (!checked_mul(n, v.extent(d), n))
      throw shape_error(
          concat("ktsa: '", name, "' (", describe_view(v), ") has more than 2^63 elements"));
  }
  return n;
}

/// The byte addresses [first, last) a view can touch, and its name; an empty
/// range (first == last) for a view with no elements or no data.
struct mem_range {
  std::uintptr_t first = 0, last = 0;
  const char* name = "";
};

/// The range of a view, with shape x stride x element size checked: an
/// overflow of int64 or of the address space is a shape_error.
template <class V>
mem_range range_of(const V& v, const char* name) {
  mem_range r;
  r.name = name;
  if (checked_size(v, name) == 0 || v.data() == nullptr) return r;
  const auto fail = [&] {
    throw shape_error(concat("ktsa: '", name, "' (", describe_view(v),
                             ") spans more memory than an address can reach "
                             "(shape x stride x element size overflows)"));
  };
  const index_t es = static_cast<index_t>(sizeof(typename V::value_type));
  index_t lo = 0, hi = 0;  // element offsets of the lowest and highest element
  for (int d = 0; d < V::rank; ++d) {
    index_t span = 0;
    if (!checked_mul(v.extent(d) - 1, v.stride(d), span)) fail();
    if (!checked_add(span < 0 ? lo : hi, span, span < 0 ? lo : hi)) fail();
  }
  index_t lo_b = 0, hi_b = 0;
  if (!checked_mul(lo, es, lo_b) || !checked_add(hi, 1, hi) || !checked_mul(hi, es, hi_b)) fail();
  const auto base = reinterpret_cast<std::uintptr_t>(v.data());
  const auto down = std::uintptr_t{0} - static_cast<std::uintptr_t>(lo_b);  // lo_b <= 0
  const auto up = static_cast<std::uintptr_t>(hi_b);
  if (down > base || up > std::numeric_limits<std::uintptr_t>::max() - base) fail();
  r.first = base - down;
  r.last = base + up;
  return r;
}

inline bool overlaps(const mem_range& a, const mem_range& b) {
  return a.first != a.last && b.first != b.last && a.first < b.last && b.first < a.last;
}

/// Outputs must not share memory with any input or with each other: writing
/// one would change what another reads or holds. The test is on the byte
/// ranges views span (so interleaved views are rejected too). An exact
/// in-place gradient (check_grad_output) is the one documented exception and
/// is checked separately.
inline void require_disjoint(std::initializer_list<mem_range> outputs,
                             std::initializer_list<mem_range> inputs) {
  for (const mem_range& o : outputs) {
    for (const mem_range& i : inputs)
      if (overlaps(o, i))
        throw invalid_argument(concat("ktsa: output '", o.name, "' overlaps input '", i.name,
                                      "': outputs need memory of their own"));
    for (const mem_range& o2 : outputs) {
      if (&o2 == &o) break;
      if (overlaps(o, o2))
        throw invalid_argument(concat("ktsa: outputs '", o2.name, "' and '", o.name,
                                      "' overlap: each output needs memory of its own"));
    }
  }
}

/// Token positions (B x T rows) one host kernel call handles at most. The
/// kernels keep 16 bytes of scratch per position, so a B x T that only a
/// stride-0 view can describe (T = 2^40 over one row) is refused here, before
/// anything is allocated, instead of attempting a multi-TiB allocation.
inline constexpr index_t kMaxRows = index_t{1} << 31;

inline index_t checked_rows(index_t B, index_t T, const char* name) {
  index_t rows = 0;
  if (!checked_mul(B, T, rows) || rows > kMaxRows)
    throw shape_error(concat("ktsa: '", name, "' has B x T = ", B, " x ", T,
                             " token positions: more than the kernels' limit of 2^31 "
                             "per call (split the batch)"));
  return rows;
}

/// Logits are [B, T, V] with B >= 1, V >= 1 and vocabulary stride 1 (the
/// kernels stream rows with vector loads), and a size that fits the address
/// space (checked before any element is read).
template <class L>
void check_logits(const tensor_view<L, 3>& x, const char* name) {
  if (x.data() == nullptr && checked_size(x, name) > 0)
    ktsa::detail::fail_argument(name, "null", "needs data");
  if (x.extent(0) < 1)
    throw shape_error(
        concat("ktsa: '", name, "' has batch size B = ", x.extent(0), ": must be >= 1"));
  if (x.extent(1) < 0)
    throw shape_error(concat("ktsa: '", name, "' has sequence length T = ", x.extent(1)));
  if (x.extent(2) < 1)
    throw shape_error(
        concat("ktsa: '", name, "' has vocabulary size V = ", x.extent(2), ": must be >= 1"));
  if (x.extent(2) > 1 && x.stride(2) != 1)
    throw invalid_argument(concat("ktsa: '", name, "' has vocabulary stride ", x.stride(2),
                                  ": the vocabulary dimension must be contiguous (stride 1)"));
  (void)range_of(x, name);
  (void)checked_rows(x.extent(0), x.extent(1), name);
}

template <class V>
void require_shape(const V& v, const index_t (&expected)[V::rank], const char* name) {
  for (int d = 0; d < V::rank; ++d)
    if (v.extent(d) != expected[d]) ktsa::detail::require_extent(v, d, expected[d], name);
  (void)range_of(v, name);  // its strides must keep it inside the address space
}

/// [first, last) byte addresses a view can touch (empty when it has no elements).
template <class V>
void byte_range(const V& v, std::uintptr_t& first, std::uintptr_t& last) {
  const mem_range r = range_of(v, "view");
  first = r.first;
  last = r.last;
}

/// True when `out` is exactly `in` (in place, same type, shape and strides);
/// throws when the two merely overlap.
template <class O, class I>
bool check_alias(const O& out, const I& in, const char* out_name, const char* in_name) {
  std::uintptr_t a0, a1, b0, b1;
  byte_range(out, a0, a1);
  byte_range(in, b0, b1);
  if (a0 == a1 || b0 == b1 || a1 <= b0 || b1 <= a0) return false;
  bool same = std::is_same_v<typename O::value_type, typename I::value_type> &&
              static_cast<const void*>(out.data()) == static_cast<const void*>(in.data());
  for (int d = 0; d < O::rank && same; ++d)
    same = out.extent(d) == in.extent(d) && out.stride(d) == in.stride(d);
  if (!same)
    throw invalid_argument(concat("ktsa: '", out_name, "' overlaps '", in_name,
                                  "' without being the same view: pass exactly the same view "
                                  "(same dtype, data, shape and strides) to work in place, or "
                                  "disjoint memory"));
  return true;
}

/// Outputs are written from several threads: no two elements may share memory.
/// (A sufficient test: sorted by |stride|, each dimension steps past the
/// whole extent of the smaller ones.)
template <class V>
void check_no_self_overlap(const V& v, const char* name) {
  if (v.data() == nullptr || checked_size(v, name) <= 1) return;
  (void)range_of(v, name);  // shape x stride fits, so the products below do too
  index_t s[V::rank], e[V::rank];
  int k = 0;
  for (int d = 0; d < V::rank; ++d)
    if (v.extent(d) > 1) {
      s[k] = v.stride(d) < 0 ? -v.stride(d) : v.stride(d);
      e[k++] = v.extent(d);
    }
  for (int i = 1; i < k; ++i)  // insertion sort by |stride|
    for (int j = i; j > 0 && s[j] < s[j - 1]; --j) {
      std::swap(s[j], s[j - 1]);
      std::swap(e[j], e[j - 1]);
    }
  index_t reach = 1;
  for (int i = 0; i < k; ++i) {
    if (s[i] < reach)
      throw invalid_argument(concat("ktsa: output '", name,
                                    "' has overlapping elements (a stride of ", s[i],
                                    " repeats memory): outputs need distinct elements"));
    if (!checked_mul(s[i], e[i], reach))
      throw shape_error(concat("ktsa: '", name, "' (", describe_view(v), ") is too large"));
  }
}

/// The default of the `check_view` callbacks below: the host backend has no
/// check of its own to add. (The CUDA backend passes one that checks device
/// views; see ktsa/cuda/logprob.cuh.)
struct no_view_check {
  template <class V>
  void operator()(const V&, const char*) const {}
};

/// Fails when a required view has no data ({}); a view of zero elements may
/// have none (an empty tensor, e.g. T = 0), its shape is checked elsewhere.
template <class V>
void require_view(const V& v, const char* name) {
  if (v.data() == nullptr && checked_size(v, name) > 0)
    ktsa::detail::fail_argument(name, "an empty view", "is required");
}

/// An output of the given shape whose elements are written from several threads.
template <class V>
void check_output(const V& v, const index_t (&shape)[V::rank], const char* name) {
  require_shape(v, shape, name);
  check_no_self_overlap(v, name);
}

/// The same for an optional output; an empty view is skipped.
template <class V>
void check_optional_output(const V& v, const index_t (&shape)[V::rank], const char* name) {
  if (v.data() != nullptr) check_output(v, shape, name);
}

/// Two logits tensors a and b of the same shape (the KL kernels).
/// `check_view(view, name)` is called on a, then b, after the shared checks.
template <class A, class B, class CheckView = no_view_check>
void check_pair(const tensor_view<A, 3>& a, const tensor_view<B, 3>& b, CheckView check_view = {}) {
  check_logits(a, "a_logits");
  check_logits(b, "b_logits");
  for (int d = 0; d < 3; ++d)
    if (a.extent(d) != b.extent(d))
      ktsa::detail::fail_shape(concat("'a_logits' is [", a.extent(0), ", ", a.extent(1), ", ",
                                      a.extent(2), "] but 'b_logits' is [", b.extent(0), ", ",
                                      b.extent(1), ", ", b.extent(2), "]"));
  check_view(a, "a_logits");
  check_view(b, "b_logits");
}

/// A gradient output with the shape of `logits`: laid out as logits, with
/// distinct elements, and either disjoint from `logits` or exactly that view.
/// `check_view(grad, grad_name)` runs after the layout checks. Returns true
/// when the gradient is computed in place.
template <class G, class L, class CheckView = no_view_check>
bool check_grad_output(const tensor_view<G, 3>& grad, const tensor_view<L, 3>& logits,
                       const char* grad_name, const char* logits_name, CheckView check_view = {}) {
  require_shape(grad, {logits.extent(0), logits.extent(1), logits.extent(2)}, grad_name);
  check_logits(grad, grad_name);
  check_view(grad, grad_name);
  check_no_self_overlap(grad, grad_name);
  return check_alias(grad, logits, grad_name, logits_name);
}

/// The outputs of sequence_logprob_forward (and its fused gradient variants):
/// sequence_logp [B] is required; token_count [B], lse and token_logp [B, T]
/// are optional.
template <class S>
void check_logprob_outputs(index_t B, index_t T, const tensor_view<S, 1>& sequence_logp,
                           const tensor_view<std::int64_t, 1>& token_count,
                           const tensor_view<float, 2>& lse = {},
                           const tensor_view<float, 2>& token_logp = {}) {
  require_view(sequence_logp, "sequence_logp");
  check_output(sequence_logp, {B}, "sequence_logp");
  check_optional_output(token_count, {B}, "token_count");
  check_optional_output(lse, {B, T}, "lse");
  check_optional_output(token_logp, {B, T}, "token_logp");
}

/// The labels and outputs of token_kl_forward, once a and b passed check_pair:
/// labels [B, T], sequence_kl [B] (required), token_kl, lse_a, lse_b and
/// token_entropy [B, T] (optional).
template <class I, class S>
void check_token_kl_forward_args(index_t B, index_t T, const tensor_view<I, 2>& labels,
                                 const tensor_view<S, 1>& sequence_kl,
                                 const tensor_view<float, 2>& token_kl,
                                 const tensor_view<float, 2>& lse_a,
                                 const tensor_view<float, 2>& lse_b,
                                 const tensor_view<float, 2>& token_entropy) {
  require_shape(labels, {B, T}, "labels");
  require_view(sequence_kl, "sequence_kl");
  check_output(sequence_kl, {B}, "sequence_kl");
  check_optional_output(token_kl, {B, T}, "token_kl");
  check_optional_output(lse_a, {B, T}, "lse_a");
  check_optional_output(lse_b, {B, T}, "lse_b");
  check_optional_output(token_entropy, {B, T}, "token_entropy");
}

/// The arguments of token_kl_backward after a and b passed check_pair: the
/// shapes of the labels, saved forward values and upstream gradient, and the
/// gradients (grad_a required, grad_b optional), which may only replace their
/// own logits. `check_view` is called on each gradient (see check_grad_output).
template <class A, class Bv, class I, class U, class GA, class GB, class CheckView = no_view_check>
void check_token_kl_backward_args(
    const tensor_view<A, 3>& a_logits, const tensor_view<Bv, 3>& b_logits,
    const tensor_view<I, 2>& labels, const tensor_view<const float, 2>& lse_a,
    const tensor_view<const float, 2>& lse_b, const tensor_view<const float, 2>& token_kl,
    const tensor_view<U, 1>& upstream_grad, const tensor_view<GA, 3>& grad_a,
    const tensor_view<GB, 3>& grad_b, CheckView check_view = {}) {
  const index_t B = a_logits.extent(0), T = a_logits.extent(1);
  require_shape(labels, {B, T}, "labels");
  require_shape(lse_a, {B, T}, "lse_a");
  require_shape(lse_b, {B, T}, "lse_b");
  require_shape(token_kl, {B, T}, "token_kl");
  require_shape(upstream_grad, {B}, "upstream_grad");
  require_view(grad_a, "grad_a");
  check_grad_output(grad_a, a_logits, "grad_a", "a_logits", check_view);
  if (check_alias(grad_a, b_logits, "grad_a", "b_logits"))
    throw invalid_argument(
        "ktsa: 'grad_a' is the 'b_logits' view: grad_a may only replace a_logits");
  if (grad_b.data() != nullptr) {
    check_grad_output(grad_b, b_logits, "grad_b", "b_logits", check_view);
    if (check_alias(grad_b, a_logits, "grad_b", "a_logits"))
      throw invalid_argument(
          "ktsa: 'grad_b' is the 'a_logits' view: grad_b may only replace b_logits");
    if (check_alias(grad_b, grad_a, "grad_b", "grad_a"))
      throw invalid_argument("ktsa: 'grad_a' and 'grad_b' are the same view");
  }
}

/// Per token position r = b * T + t: the vocabulary index scored there, or -1
/// when masked; and the number of unmasked positions of each sequence.
struct targets {
  std::vector<std::int64_t> label;
  std::vector<std::int64_t> count;
};

/// `validate_range` checks every label that is used lies in [0, V) (log-prob
/// kernels); the KL kernels use labels as a mask only.
template <class I>
targets prepare_targets(const tensor_view<I, 2>& labels, index_t B, index_t T, index_t V,
                        const logprob_options& o, bool validate_range) {
  targets out;
  out.label.resize(static_cast<size_t>(checked_rows(B, T, "labels")));
  out.count.assign(static_cast<size_t>(B), 0);
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t) {
      const std::int64_t y = label_at(labels, b, t, T, o);
      std::int64_t target = -1;
      if (y != o.ignore_index) {
        if (validate_range && (y < 0 || y >= V))
          throw data_error(concat("ktsa: 'labels' has value ", y, " at batch ", b, ", position ",
                                  o.shift ? t + 1 : t, ": must be in [0, ", V,
                                  ") or equal ignore_index (", o.ignore_index, ")"));
        target = validate_range ? y : 0;
        ++out.count[static_cast<size_t>(b)];
      }
      out.label[static_cast<size_t>(b * T + t)] = target;
    }
  return out;
}

/// The ratio sum / count of a mean reduction; 0 for a sequence with no tokens.
inline double reduce_sequence(double sum, std::int64_t count, reduction r) {
  if (r == reduction::sum) return sum;
  return count > 0 ? sum / static_cast<double>(count) : 0.0;
}

/// The values a backward reads from its forward ([B, T] each) must be finite at
/// every unmasked position; `hint` ends the message (what to pass instead).
template <size_t N>
void check_saved_finite(const targets& tg, index_t B, index_t T,
                        const tensor_view<const float, 2> (&saved)[N],
                        const char* const (&names)[N], const char* hint) {
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      if (tg.label[static_cast<size_t>(b * T + t)] >= 0)
        for (size_t k = 0; k < N; ++k)
          if (!std::isfinite(saved[k](b, t)))
            throw data_error(concat("ktsa: '", names[k], "' is ", saved[k](b, t), " at batch ", b,
                                    ", position ", t, ": ", hint));
}

/// The per-sequence gradient scale of a backward: upstream_grad[b], divided by
/// the token count for a mean reduction (0 for a sequence with no tokens).
/// A gradient scale must be a finite float: a double beyond FLT_MAX would round
/// to inf, and inf x (p = 0) is NaN. Refused with the value and the index.
inline float float_scale(double s, const char* name, index_t i) {
  if (!(std::fabs(s) <= static_cast<double>(std::numeric_limits<float>::max())))
    throw data_error(concat("ktsa: argument '", name, "' gives the row scale ", s, " at index ", i,
                            ": gradient scales must be finite and within the float range "
                            "(|s| <= 3.4028234663852886e38)"));
  return static_cast<float>(s);
}

template <class U>
std::vector<float> sequence_scales(const tensor_view<U, 1>& upstream_grad, const targets& tg,
                                   reduction r) {
  std::vector<float> scale(tg.count.size());
  for (size_t b = 0; b < scale.size(); ++b)
    scale[b] =
        float_scale(reduce_sequence(static_cast<double>(upstream_grad[static_cast<index_t>(b)]),
                                    tg.count[b], r),
                    "upstream_grad", static_cast<index_t>(b));
  return scale;
}

template <class U>
void check_finite_vector(const tensor_view<U, 1>& v, const char* name) {
  for (index_t i = 0; i < v.extent(0); ++i) {
    const double x = static_cast<double>(v[i]);
    if (!std::isfinite(x))
      throw data_error(
          concat("ktsa: argument '", name, "' has a non-finite value ", x, " at index ", i));
  }
}

template <class T>
[[noreturn]] void fail_nonfinite_logit(const char* name, index_t b, index_t t, index_t j, T value) {
  throw data_error(concat("ktsa: '", name, "' has the non-finite value ",
                          static_cast<double>(to_float(value)), " at batch ", b, ", position ", t,
                          ", vocabulary index ", j, " (check_finite)"));
}

[[noreturn]] inline void fail_all_neg_inf(const char* name, index_t b, index_t t) {
  throw data_error(concat("ktsa: '", name, "' row at batch ", b, ", position ", t,
                          " is all -inf: its softmax is undefined"));
}

}  // namespace ktsa::kernels::detail
