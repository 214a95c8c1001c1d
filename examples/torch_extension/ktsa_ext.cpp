// ktsa as a PyTorch C++ extension: sequence_logprob, token_kl, kto_loss and
// fused_head_logprob (the fused linear head: hidden states and lm_head weight
// in, no logits held) as autograd Functions (the ones of
// examples/libtorch_kto/ktsa_torch.hpp), plus
// the batch-KL reference point and BCO's running mean. Built with
// torch.utils.cpp_extension (setup.py here).
#include <torch/extension.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "ktsa/loss/reference_point.hpp"
#include "ktsa_torch.hpp"

namespace py = pybind11;
using ktsa::loss::variant;

namespace {

// Names of loss::variant as Python passes them. kto_zero is not offered
// (apo_zero_unpaired is the published zero-reference loss).
const std::vector<std::pair<std::string, variant>>& variant_names() {
  static const std::vector<std::pair<std::string, variant>> names = {
      {"kto", variant::kto},   {"kto_log_sigmoid", variant::kto_log_sigmoid},
      {"ktsa", variant::ktsa}, {"apo_zero_unpaired", variant::apo_zero_unpaired},
      {"bco", variant::bco},
  };
  return names;
}

// Names of loss::bco_update (TRL's order, before_loss, is the default).
const std::vector<std::pair<std::string, ktsa::loss::bco_update>>& bco_order_names() {
  using ktsa::loss::bco_update;
  static const std::vector<std::pair<std::string, bco_update>> names = {
      {"before_loss", bco_update::before_loss},
      {"after_loss", bco_update::after_loss},
      {"none", bco_update::none},
  };
  return names;
}

template <class E>
E enum_from_name(const std::vector<std::pair<std::string, E>>& names, const char* field,
                 const std::string& value) {
  std::string known;
  for (const auto& [n, e] : names) {
    if (n == value) return e;
    known += (known.empty() ? "" : ", ") + n;
  }
  throw ktsa::invalid_argument("ktsa: argument '" + std::string(field) + "' = '" + value +
                               "': expected one of " + known);
}

// One row per field of ktsa::loss::config: the keyword and how to set it.
// A new field is one more row here (an enum also needs a name table like
// variant_names()).
using setter = std::function<void(ktsa::loss::config&, py::handle)>;
const std::vector<std::pair<std::string, setter>>& config_fields() {
  static const std::vector<std::pair<std::string, setter>> fields = {
      {"beta", [](ktsa::loss::config& c, py::handle v) { c.beta = v.cast<double>(); }},
      {"desirable_weight",
       [](ktsa::loss::config& c, py::handle v) { c.desirable_weight = v.cast<double>(); }},
      {"undesirable_weight",
       [](ktsa::loss::config& c, py::handle v) { c.undesirable_weight = v.cast<double>(); }},
      {"gamma", [](ktsa::loss::config& c, py::handle v) { c.gamma = v.cast<double>(); }},
      {"variant",
       [](ktsa::loss::config& c, py::handle v) {
         c.kind = enum_from_name(variant_names(), "variant", v.cast<std::string>());
       }},
      {"bco_order",
       [](ktsa::loss::config& c, py::handle v) {
         c.bco_order = enum_from_name(bco_order_names(), "bco_order", v.cast<std::string>());
       }},
  };
  return fields;
}

ktsa::loss::config config_from(const py::kwargs& kw) {
  ktsa::loss::config c;
  for (const auto& item : kw) {
    const std::string key = item.first.cast<std::string>();
    bool found = false;
    for (const auto& [name, set] : config_fields())
      if (name == key) {
        set(c, item.second);
        found = true;
      }
    if (!found) {
      std::string known;
      for (const auto& f : config_fields()) known += (known.empty() ? "" : ", ") + f.first;
      throw ktsa::invalid_argument("ktsa: unknown loss option '" + key + "' (options: " + known +
                                   ")");
    }
  }
  ktsa::loss::validate(c);
  return c;
}

ktsa::kernels::logprob_options logprob_options(int64_t ignore_index, bool shift,
                                               const std::string& reduction, bool check_finite) {
  ktsa::kernels::logprob_options o;
  o.ignore_index = ignore_index;
  o.shift = shift;
  if (reduction == "sum")
    o.reduce = ktsa::kernels::reduction::sum;
  else if (reduction == "mean")
    o.reduce = ktsa::kernels::reduction::mean;
  else
    throw ktsa::invalid_argument("ktsa: argument 'reduction' = '" + reduction +
                                 "': expected 'sum' or 'mean'");
  o.check_finite = check_finite;
  return o;
}

py::dict metrics_dict(const ktsa::loss::batch_metrics& m) {
  py::dict d;
  d["kl"] = m.kl;
  d["rewards/chosen"] = m.rewards_chosen();
  d["rewards/rejected"] = m.rewards_rejected();
  d["rewards/margins"] = m.rewards_margins();
  d["logps/chosen"] = m.logps_chosen();
  d["logps/rejected"] = m.logps_rejected();
  d["count/chosen"] = m.chosen_count;
  d["count/rejected"] = m.rejected_count;
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ktsa: KTO-family losses with exact gradients and log-prob / KL kernels";
  py::register_exception<ktsa::shape_error>(m, "ShapeError", PyExc_ValueError);
  py::register_exception<ktsa::invalid_argument>(m, "InvalidArgument", PyExc_ValueError);
  py::register_exception<ktsa::data_error>(m, "DataError", PyExc_ValueError);

  py::class_<ktsa::loss::bco_running_mean>(m, "BcoRunningMean")
      .def(py::init<double, ktsa::index_t>(), py::arg("mean") = 0.0, py::arg("count") = 0)
      .def_property_readonly("mean", &ktsa::loss::bco_running_mean::mean)
      .def_property_readonly("count", &ktsa::loss::bco_running_mean::count);

  m.def(
      "sequence_logprob",
      [](const torch::Tensor& logits, const torch::Tensor& labels, int64_t ignore_index, bool shift,
         const std::string& reduction, bool check_finite, int threads) {
        return ktsa_torch::SequenceLogprob::apply(
            logits, labels, logprob_options(ignore_index, shift, reduction, check_finite), threads);
      },
      "Per-sequence log-probs [B] (float64) of labels [B, T] under softmax(logits [B, T, V]).",
      py::arg("logits"), py::arg("labels"), py::arg("ignore_index") = -100,
      py::arg("shift") = false, py::arg("reduction") = "sum", py::arg("check_finite") = false,
      py::arg("threads") = 1);

  m.def(
      "fused_head_logprob",
      [](const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& labels,
         c10::optional<torch::Tensor> bias, int64_t ignore_index, bool shift,
         const std::string& reduction, bool check_finite, double temperature, double softcap,
         int64_t chunk_rows, int threads) {
        ktsa::kernels::fused_linear_options o;
        o.logprob = logprob_options(ignore_index, shift, reduction, check_finite);
        o.temperature = static_cast<float>(temperature);
        o.softcap = static_cast<float>(softcap);
        o.chunk_rows = chunk_rows;
        return ktsa_torch::FusedHeadLogprob::apply(
            hidden, weight, bias.has_value() ? *bias : ktsa_torch::no_bias(), labels, o, threads);
      },
      "Per-sequence log-probs [B] (float64) of labels [B, T] under softmax(hidden [B, T, H] @ "
      "weight[V, H].T + bias) through ktsa's fused linear head (the [B, T, V] logits are never "
      "held); gradients for hidden, weight and bias. chunk_rows 0: from the 16 MiB budget.",
      py::arg("hidden"), py::arg("weight"), py::arg("labels"), py::arg("bias") = py::none(),
      py::arg("ignore_index") = -100, py::arg("shift") = false, py::arg("reduction") = "sum",
      py::arg("check_finite") = false, py::arg("temperature") = 1.0, py::arg("softcap") = 0.0,
      py::arg("chunk_rows") = 0, py::arg("threads") = 1);

  m.def(
      "token_kl",
      [](const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& labels,
         int64_t ignore_index, bool shift, const std::string& reduction, bool check_finite,
         int threads) {
        return ktsa_torch::TokenKL::apply(
            a, b, labels, logprob_options(ignore_index, shift, reduction, check_finite), threads);
      },
      "Per-sequence KL(softmax(a) || softmax(b)) [B] (float64) over unmasked positions.",
      py::arg("a_logits"), py::arg("b_logits"), py::arg("labels"), py::arg("ignore_index") = -100,
      py::arg("shift") = false, py::arg("reduction") = "sum", py::arg("check_finite") = false,
      py::arg("threads") = 1);

  m.def(
      "kto_loss",
      [](const torch::Tensor& policy, const torch::Tensor& reference,
         const torch::Tensor& desirable, py::object z0, ktsa::loss::bco_running_mean* bco,
         bool return_metrics, const py::kwargs& kw) -> py::object {
        const ktsa::loss::config cfg = config_from(kw);
        torch::Tensor z = py::isinstance<py::float_>(z0) || py::isinstance<py::int_>(z0)
                              ? torch::tensor(z0.cast<double>(), torch::kFloat64)
                              : z0.cast<torch::Tensor>();
        ktsa::loss::batch_metrics metrics;
        torch::Tensor loss =
            ktsa_torch::KtoLoss::apply(policy, reference, desirable, z, cfg, bco, &metrics);
        if (!return_metrics) return py::cast(loss);
        return py::make_tuple(loss, metrics_dict(metrics));
      },
      "The KTO-family batch loss of per-sequence log-probs; options: beta, desirable_weight, "
      "undesirable_weight, gamma, variant ('kto', 'kto_log_sigmoid', 'ktsa', "
      "'apo_zero_unpaired', 'bco'), bco_order ('before_loss' = TRL's default, 'after_loss', "
      "'none' = evaluation). z0 is a float or a [B] tensor; bco_state is required for 'bco' "
      "(updated by the call unless bco_order is 'none').",
      py::arg("policy_logps"), py::arg("reference_logps"), py::arg("desirable"),
      py::arg("z0") = 0.0, py::arg("bco_state") = nullptr, py::arg("return_metrics") = false);

  m.def(
      "batch_kl_reference_point",
      [](const torch::Tensor& kl_policy, const torch::Tensor& kl_reference) {
        const auto p = kl_policy.detach().to(torch::kFloat64).contiguous();
        const auto r = kl_reference.detach().to(torch::kFloat64).contiguous();
        return ktsa::loss::batch_kl_reference_point(
            ktsa_torch::view_of<const double, 1>(p, "kl_policy_logps"),
            ktsa_torch::view_of<const double, 1>(r, "kl_reference_logps"));
      },
      "z0 = max(0, mean(kl_policy_logps - kl_reference_logps)), no gradient.",
      py::arg("kl_policy_logps"), py::arg("kl_reference_logps"));
}
