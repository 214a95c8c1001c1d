// ktsa/dist/reducer.hpp: the reducer concept that carries ktsa's partial sums
// between processes, and the adapters that need no transport library.
//
// A reducer R is any type with
//   int  rank() const;                     // this process, 0 <= rank < size
//   int  size() const;                     // processes in the group, >= 1
//   void all_reduce(double* data, std::size_t n, reduce_op op);        // in place
//   void all_reduce(std::int64_t* data, std::size_t n, reduce_op op);  // in place
// and optionally
//   void broadcast(double* data, std::size_t n, int root);
//   void broadcast(std::int64_t* data, std::size_t n, int root);
// (without them ktsa broadcasts by an all-reduce sum of zeros, which is exact).
// Arrays live in host memory and are small (a few numbers per rank, or a few
// per logits row for the vocab-sharded kernels). Every rank makes the same
// calls in the same order with the same n: these are collectives.
//
// Adapters: mpi_reducer (ktsa/dist/mpi.hpp, MPI_Allreduce on the caller's
// communicator), nccl_reducer (ktsa/dist/nccl.hpp, ncclAllReduce on the
// caller's communicator and stream), callable_reducer (below: wraps a
// trainer's own torch.distributed / Gloo call), local_reducer (one process).
//
// Determinism: ktsa never lets the transport add floating-point numbers from
// different ranks. It gathers each rank's partials (all_gather below: an
// all-reduce sum in which every slot has one non-zero contributor, exact in
// any order) and combines them in rank order on every rank, so every rank
// computes bitwise the same result whatever reduction tree the library picks.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ktsa/core/errors.hpp"

namespace ktsa::dist {

enum class reduce_op { sum, max };

/// Thrown on every other rank when one rank fails inside a ktsa collective
/// with an error that is not one of ktsa's own types (ktsa's own types are
/// re-thrown as the same type on every rank).
class remote_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------- the concept

namespace detail {
template <class R, class = void>
struct has_all_reduce : std::false_type {};
template <class R>
struct has_all_reduce<
    R, std::void_t<decltype(std::declval<R&>().all_reduce(std::declval<double*>(), std::size_t{},
                                                          reduce_op::sum)),
                   decltype(std::declval<R&>().all_reduce(std::declval<std::int64_t*>(),
                                                          std::size_t{}, reduce_op::sum)),
                   decltype(int(std::declval<const R&>().rank())),
                   decltype(int(std::declval<const R&>().size()))>> : std::true_type {};

template <class R, class T, class = void>
struct has_broadcast : std::false_type {};
template <class R, class T>
struct has_broadcast<
    R, T,
    std::void_t<decltype(std::declval<R&>().broadcast(std::declval<T*>(), std::size_t{}, int{}))>>
    : std::true_type {};
}  // namespace detail

/// True when R models the reducer concept above.
template <class R>
inline constexpr bool is_reducer_v = detail::has_all_reduce<std::remove_cv_t<R>>::value;

#define KTSA_REQUIRE_REDUCER(R)                                                              \
  static_assert(::ktsa::dist::is_reducer_v<R>,                                               \
                "not a ktsa reducer: needs rank(), size() and all_reduce(double*|int64_t*, " \
                "size_t, reduce_op); see ktsa/dist/reducer.hpp")

// ---------------------------------------------------------------- adapters

/// One process: every collective is the identity. Lets the same training code
/// run without a transport.
struct local_reducer {
  int rank() const { return 0; }
  int size() const { return 1; }
  void all_reduce(double*, std::size_t, reduce_op) {}
  void all_reduce(std::int64_t*, std::size_t, reduce_op) {}
  void broadcast(double*, std::size_t, int) {}
  void broadcast(std::int64_t*, std::size_t, int) {}
};

/// Any callable f(T* data, std::size_t n, reduce_op op) that all-reduces in
/// place, for T = double and T = std::int64_t (a generic lambda, or a functor
/// with both overloads): a trainer's torch.distributed or Gloo wrapper.
/// ktsa asks only for sum and max; broadcast is derived (exact).
template <class F>
class callable_reducer {
 public:
  callable_reducer(int rank, int size, F f) : rank_(rank), size_(size), f_(std::move(f)) {
    ktsa::detail::require(size >= 1, "size", size, "must be >= 1");
    ktsa::detail::require(rank >= 0 && rank < size, "rank", rank, "must be in [0, size)");
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  void all_reduce(double* data, std::size_t n, reduce_op op) { f_(data, n, op); }
  void all_reduce(std::int64_t* data, std::size_t n, reduce_op op) { f_(data, n, op); }

 private:
  int rank_, size_;
  F f_;
};

template <class F>
callable_reducer<F> make_callable_reducer(int rank, int size, F f) {
  return callable_reducer<F>(rank, size, std::move(f));
}

// ---------------------------------------------------------------- derived collectives

/// Broadcasts data[0, n) from `root` to every rank: the reducer's own
/// broadcast, or an all-reduce sum where only root contributes (exact: x + 0 = x).
template <class R, class T>
void broadcast(R& r, T* data, std::size_t n, int root) {
  KTSA_REQUIRE_REDUCER(R);
  static_assert(std::is_same_v<T, double> || std::is_same_v<T, std::int64_t>,
                "ktsa reducers carry double or std::int64_t");
  if (r.size() == 1 || n == 0) return;
  if constexpr (detail::has_broadcast<R, T>::value) {
    r.broadcast(data, n, root);
  } else {
    if (r.rank() != root)
      for (std::size_t i = 0; i < n; ++i) data[i] = T(0);
    r.all_reduce(data, n, reduce_op::sum);
  }
}

/// Every rank's `local` (the same length on every rank), concatenated in rank
/// order: out[rank * n + i] = local_of(rank)[i]. Built from an all-reduce sum
/// in which each slot has exactly one non-zero contributor, so the result is
/// exact and identical on every rank for any reduction order (-0.0 becomes +0.0).
template <class R, class T>
std::vector<T> all_gather(R& r, const T* local, std::size_t n) {
  KTSA_REQUIRE_REDUCER(R);
  static_assert(std::is_same_v<T, double> || std::is_same_v<T, std::int64_t>,
                "ktsa reducers carry double or std::int64_t");
  const std::size_t ranks = static_cast<std::size_t>(r.size());
  std::vector<T> out(ranks * n, T(0));
  const std::size_t me = static_cast<std::size_t>(r.rank());
  for (std::size_t i = 0; i < n; ++i) out[me * n + i] = local[i];
  if (ranks > 1 && n > 0) r.all_reduce(out.data(), out.size(), reduce_op::sum);
  return out;
}

template <class R, class T>
std::vector<T> all_gather(R& r, const std::vector<T>& local) {
  return all_gather(r, local.data(), local.size());
}

// ---------------------------------------------------------------- errors on every rank

namespace detail {

enum error_kind : std::int64_t {
  kind_invalid_argument = 1,
  kind_shape_error,
  kind_data_error,
  kind_other
};
inline constexpr std::size_t kMessageWords = 64;  // 512 bytes of message travel

[[noreturn]] inline void throw_kind(std::int64_t kind, const std::string& what) {
  switch (kind) {
    case kind_shape_error:
      throw shape_error(what);
    case kind_invalid_argument:
      throw ktsa::invalid_argument(what);
    case kind_data_error:
      throw data_error(what);
    default:
      throw remote_error(what);
  }
}

/// Runs `f` on this rank, then agrees with every rank on whether any of them
/// threw; if one did, every rank throws. The lowest failing rank's exception
/// type (ktsa's types, else remote_error) and message (up to 512 bytes) are
/// sent to the others, whose message starts "ktsa: rank K of N failed: ";
/// the failing rank re-throws its own exception. Costs one all-reduce of one
/// int64 when nothing fails, so a local error can never leave the other ranks
/// waiting in the next collective.
template <class R, class F>
void on_every_rank(R& r, F&& f) {
  std::exception_ptr local;
  std::int64_t kind = 0;
  std::string message;
  try {
    f();
  } catch (const shape_error& e) {
    local = std::current_exception(), kind = kind_shape_error, message = e.what();
  } catch (const ktsa::invalid_argument& e) {
    local = std::current_exception(), kind = kind_invalid_argument, message = e.what();
  } catch (const data_error& e) {
    local = std::current_exception(), kind = kind_data_error, message = e.what();
  } catch (const std::exception& e) {
    local = std::current_exception(), kind = kind_other, message = e.what();
  } catch (...) {
    local = std::current_exception(), kind = kind_other, message = "a non-std exception";
  }
  if (r.size() == 1) {
    if (local) std::rethrow_exception(local);
    return;
  }
  // max over ranks of (size - rank) for the failing ones: the lowest failing rank.
  std::int64_t flag = local ? static_cast<std::int64_t>(r.size() - r.rank()) : 0;
  r.all_reduce(&flag, 1, reduce_op::max);
  if (flag == 0) return;
  const int root = r.size() - static_cast<int>(flag);
  std::int64_t words[kMessageWords + 1] = {};
  if (r.rank() == root) {
    words[0] = kind;
    std::memcpy(words + 1, message.data(),
                std::min(message.size(), kMessageWords * sizeof(std::int64_t) - 1));
  }
  broadcast(r, words, kMessageWords + 1, root);
  if (local) std::rethrow_exception(local);
  char text[kMessageWords * sizeof(std::int64_t)];
  std::memcpy(text, words + 1, sizeof(text));
  text[sizeof(text) - 1] = '\0';
  throw_kind(words[0], ktsa::detail::concat("ktsa: rank ", root, " of ", r.size(),
                                            " failed: ", static_cast<const char*>(text)));
}

}  // namespace detail

/// Public form of detail::on_every_rank: runs `f` (this rank's local work,
/// which may throw), then makes every rank throw if any rank threw.
template <class R, class F>
void on_every_rank(R& r, F&& f) {
  KTSA_REQUIRE_REDUCER(R);
  detail::on_every_rank(r, std::forward<F>(f));
}

}  // namespace ktsa::dist
