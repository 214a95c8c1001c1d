// ktsa/sim/catalogue.hpp: a seeded synthetic market over the eight product
// categories of the KTSA paper (All Beauty, Appliances, Baby Products, Beauty
// & Care, Books, Apparel, Pet Supplies, Toys and Games).
//
// Each category has eight attributes. An attribute has one seller word (the
// claim a description makes, e.g. "fragrance-free") and two buyer phrasings
// of the same need (e.g. "I hate strong scents"): queries use the buyer's
// words, descriptions the seller's, and nothing but training connects them
// (the "language gap").
//
// A product has true attribute levels in [0, 1] that nobody in the market sees
// directly; what is visible is a noisy spec sheet, an average star rating, the
// review key features (top-3 praised attributes, top-3 concerns, as the paper
// derives them from reviews) and the seller's own description, which claims
// the attributes the seller likes to market: mostly strong ones, sometimes
// weak ones (over-claiming). A query names one to three needs and comes with
// the product a recommender retrieved for it.
//
// Everything follows from market_config::seed through ktsa::sim::rng, so the
// same seed gives the same market under every compiler and standard library.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ktsa/core/errors.hpp"
#include "ktsa/sim/random.hpp"

namespace ktsa::sim {

inline constexpr int num_categories = 8;
inline constexpr int attributes_per_category = 8;
inline constexpr int num_attributes = num_categories * attributes_per_category;
/// Key features per side: top-3 features and top-3 concerns (K = 6 in Eq. 2).
inline constexpr int key_features_per_side = 3;
inline constexpr int num_key_features = 2 * key_features_per_side;

struct attribute_words {
  const char* claim;    ///< the seller's word, a description token
  const char* need[2];  ///< two ways a buyer names the same need
};

struct category_info {
  const char* name;
  attribute_words attributes[attributes_per_category];
};

/// The fixed category table (index 0..7 in the paper's order).
inline const category_info& category(int c) {
  static const category_info table[num_categories] = {
      {"All Beauty",
       {{"long-lasting", {"stays on all day", "won't fade by lunch"}},
        {"gentle formula", {"for my sensitive skin", "won't irritate"}},
        {"hydrating", {"my skin feels dry", "for flaky patches"}},
        {"natural ingredients", {"no harsh chemicals", "clean beauty"}},
        {"fragrance-free", {"I hate strong scents", "no perfume smell"}},
        {"lightweight feel", {"doesn't feel heavy", "not greasy"}},
        {"highly pigmented", {"bold colour", "shows up on dark skin"}},
        {"great value", {"on a budget", "cheap but good"}}}},
      {"Appliances",
       {{"energy-efficient", {"lower my power bill", "uses less electricity"}},
        {"quiet operation", {"won't wake the baby", "no loud noise"}},
        {"compact design", {"small apartment", "fits my counter"}},
        {"durable build", {"lasts for years", "won't break down"}},
        {"fast", {"in a hurry", "saves me time"}},
        {"easy to clean", {"hate scrubbing", "dishwasher safe parts"}},
        {"large capacity", {"family of six", "cook in big batches"}},
        {"smart controls", {"control from my phone", "works with my assistant"}}}},
      {"Baby Products",
       {{"BPA-free", {"nothing toxic", "safe to chew"}},
        {"easy to wash", {"messy eater", "goes in the washer"}},
        {"portable", {"for travel", "take it on trips"}},
        {"soft materials", {"gentle on baby's skin", "no rough seams"}},
        {"adjustable", {"grows with my child", "newborn to toddler"}},
        {"sturdy", {"won't tip over", "holds up to a toddler"}},
        {"easy assembly", {"no tools", "set up in minutes"}},
        {"soothing", {"helps baby sleep", "calms a fussy baby"}}}},
      {"Beauty & Care",
       {{"dermatologist-tested", {"for eczema", "doctor recommended"}},
        {"moisturizing", {"cracked hands", "dry winter skin"}},
        {"fresh scent", {"smell nice all day", "to feel clean"}},
        {"travel-size", {"carry-on friendly", "fits in my gym bag"}},
        {"vegan", {"cruelty-free", "no animal testing"}},
        {"smooth finish", {"no razor bumps", "soft skin after"}},
        {"anti-aging", {"reduce fine lines", "look younger"}},
        {"fast-absorbing", {"not sticky", "dries quickly"}}}},
      {"Books",
       {{"page-turner", {"can't put it down", "keeps me hooked"}},
        {"well-researched", {"accurate facts", "backed by sources"}},
        {"beginner-friendly", {"new to the topic", "easy to follow"}},
        {"illustrated", {"lots of pictures", "visual learner"}},
        {"quick read", {"for a short flight", "finish in a weekend"}},
        {"humorous", {"make me laugh", "something light"}},
        {"comprehensive", {"deep dive", "covers everything"}},
        {"sturdy hardcover", {"gift quality", "will survive my kids"}}}},
      {"Apparel",
       {{"breathable", {"for hot summer days", "don't want to sweat"}},
        {"true to size", {"fits as expected", "no guessing my size"}},
        {"stretchy", {"room to move", "for yoga"}},
        {"warm", {"for cold winters", "keeps me cosy"}},
        {"waterproof", {"rainy commute", "stays dry in a storm"}},
        {"wrinkle-free", {"no ironing", "packs for business trips"}},
        {"soft fabric", {"not itchy", "comfortable all day"}},
        {"reinforced stitching", {"survives the wash", "doesn't fall apart"}}}},
      {"Pet Supplies",
       {{"chew-proof", {"my dog destroys toys", "for aggressive chewers"}},
        {"grain-free", {"sensitive stomach", "allergic to wheat"}},
        {"odor control", {"apartment smells", "hides litter smell"}},
        {"machine washable", {"hair everywhere", "easy to keep clean"}},
        {"vet-approved", {"safe for my puppy", "recommended by vets"}},
        {"for large breeds", {"big dog", "90-pound lab"}},
        {"calming", {"anxious dog", "afraid of thunder"}},
        {"interactive", {"keeps my cat busy", "bored when alone"}}}},
      {"Toys and Games",
       {{"educational", {"learn while playing", "STEM for my kid"}},
        {"durable", {"survives rough play", "won't break in a day"}},
        {"non-toxic", {"safe for a 2-year-old", "no small parts"}},
        {"endless replay", {"not boring after a week", "plays again and again"}},
        {"easy rules", {"quick to learn", "for family game night"}},
        {"no batteries needed", {"hate buying batteries", "screen-free fun"}},
        {"imaginative play", {"creative kid", "pretend play"}},
        {"multiplayer", {"play with siblings", "for a group"}}}},
  };
  detail::require(c >= 0 && c < num_categories, "category", c, "must be in [0, 8)");
  return table[c];
}

/// The category index of a name as printed by category(c).name (exact match).
inline int category_index(std::string_view name) {
  for (int c = 0; c < num_categories; ++c)
    if (name == category(c).name) return c;
  throw invalid_argument(
      detail::concat("ktsa: argument 'category' = '", name, "': not one of the eight categories"));
}

/// The description vocabulary: end of description, one claim word per
/// (category, attribute), and generic hype fillers. Token ids are stable across
/// seeds and category selections.
class vocabulary {
 public:
  static constexpr int eos = 0;
  static constexpr int first_claim = 1;
  static constexpr int num_fillers = 6;
  static constexpr int first_filler = first_claim + num_attributes;
  static constexpr int size = first_filler + num_fillers;

  static int claim_token(int category_id, int attribute) {
    check_attribute(category_id, attribute);
    return first_claim + category_id * attributes_per_category + attribute;
  }
  static bool is_claim(int token) { return token >= first_claim && token < first_filler; }
  static bool is_filler(int token) { return token >= first_filler && token < size; }
  static int claim_category(int token) { return (token - first_claim) / attributes_per_category; }
  static int claim_attribute(int token) { return (token - first_claim) % attributes_per_category; }
  static int filler_token(int k) {
    detail::require(k >= 0 && k < num_fillers, "filler", k, "must be in [0, 6)");
    return first_filler + k;
  }
  static void check_token(int token) {
    detail::require(token >= 0 && token < size, "token", token, "must be in [0, vocabulary::size)");
  }
  static std::string text(int token) {
    static const char* fillers[num_fillers] = {"bestseller", "premium quality", "amazing",
                                               "must-have",  "top rated",       "limited offer"};
    check_token(token);
    if (token == eos) return "<end>";
    if (is_claim(token))
      return category(claim_category(token)).attributes[claim_attribute(token)].claim;
    return fillers[token - first_filler];
  }
  /// A description as text, tokens joined by ", " (stops at the first <end>).
  static std::string text(const std::vector<int>& tokens) {
    std::string out;
    for (int t : tokens) {
      if (t == eos) break;
      if (!out.empty()) out += ", ";
      out += text(t);
    }
    return out;
  }
  static void check_attribute(int category_id, int attribute) {
    detail::require(category_id >= 0 && category_id < num_categories, "category", category_id,
                    "must be in [0, 8)");
    detail::require(attribute >= 0 && attribute < attributes_per_category, "attribute", attribute,
                    "must be in [0, 8)");
  }
};

struct product {
  int id = 0;
  int category = 0;
  std::string title;
  /// True attribute levels in [0, 1]; hidden from buyer and generator alike.
  std::array<double, attributes_per_category> quality{};
  /// Average star rating in [1, 5].
  double rating = 3;
  /// Review key features: the three best and three worst attributes by quality.
  std::array<int, key_features_per_side> top_features{};
  std::array<int, key_features_per_side> top_concerns{};
  /// Spec sheet: +1 the attribute is supported, -1 it is not, 0 unclear (noisy).
  std::array<int, attributes_per_category> spec{};
  /// The seller's own description: claim and filler tokens, ending with eos.
  std::vector<int> seller_description;

  /// The rating on [0, 1]: (rating - 1) / 4, the R_avg of Eq. 2.
  double rating_normalised() const { return (rating - 1.0) / 4.0; }
  bool is_feature(int a) const {
    return std::find(top_features.begin(), top_features.end(), a) != top_features.end();
  }
  bool is_concern(int a) const {
    return std::find(top_concerns.begin(), top_concerns.end(), a) != top_concerns.end();
  }
  /// Key feature k in 0..5: features first, then concerns. Returns the
  /// attribute and whether reviews praise (+1) or criticise (-1) it.
  std::pair<int, int> key_feature(int k) const {
    detail::require(k >= 0 && k < num_key_features, "key feature", k, "must be in [0, 6)");
    return k < key_features_per_side ? std::pair<int, int>{top_features[k], +1}
                                     : std::pair<int, int>{top_concerns[k - 3], -1};
  }
};

struct need {
  int attribute = 0;  ///< attribute index within the query's category
  int phrasing = 0;   ///< which of the two buyer phrasings the query uses
  double weight = 1;  ///< importance; the weights of a query sum to 1
};

struct query {
  int id = 0;
  int category = 0;
  int product = 0;  ///< index into market::products()
  std::vector<need> needs;
  std::string text;  ///< the buyer's words, e.g. "Pet Supplies: anxious dog; big dog"
};

struct market_config {
  std::uint64_t seed = 1;
  int products_per_category = 60;
  int train_queries_per_category = 300;
  int test_queries_per_category = 150;
  /// Which categories get queries (indices 0..7, no duplicates); empty = all.
  std::vector<int> categories;
  /// Half-width of the seller's marketing bias: how far the seller's taste
  /// departs from the truth when choosing what to claim.
  double seller_bias = 0.45;
  /// Half-width of the spec sheet's noise around the true level.
  double spec_noise = 0.2;
};

inline void validate(const market_config& c) {
  detail::require(c.products_per_category >= 1, "products_per_category", c.products_per_category,
                  "must be >= 1");
  detail::require(c.train_queries_per_category >= 0, "train_queries_per_category",
                  c.train_queries_per_category, "must be >= 0");
  detail::require(c.test_queries_per_category >= 0, "test_queries_per_category",
                  c.test_queries_per_category, "must be >= 0");
  detail::require(c.seller_bias >= 0 && c.seller_bias <= 2, "seller_bias", c.seller_bias,
                  "must be in [0, 2]");
  detail::require(c.spec_noise >= 0 && c.spec_noise <= 1, "spec_noise", c.spec_noise,
                  "must be in [0, 1]");
  std::array<bool, num_categories> seen{};
  for (int cat : c.categories) {
    detail::require(cat >= 0 && cat < num_categories, "categories", cat, "must be in [0, 8)");
    detail::require(!seen[static_cast<size_t>(cat)], "categories", cat, "is listed twice");
    seen[static_cast<size_t>(cat)] = true;
  }
}

class market {
 public:
  explicit market(const market_config& cfg = {}) : cfg_(cfg) {
    validate(cfg_);
    if (cfg_.categories.empty())
      for (int c = 0; c < num_categories; ++c) cfg_.categories.push_back(c);
    // Products of every category exist whatever the selection, so a product's
    // id and content do not depend on --categories.
    for (int c = 0; c < num_categories; ++c) {
      rng gen(hash_keys(cfg_.seed, 0x70726f64ull /*prod*/, static_cast<std::uint64_t>(c)));
      for (int i = 0; i < cfg_.products_per_category; ++i)
        products_.push_back(make_product(gen, c, i));
    }
    for (int c : cfg_.categories) {
      rng gen(hash_keys(cfg_.seed, 0x71756572ull /*quer*/, static_cast<std::uint64_t>(c)));
      for (int i = 0; i < cfg_.train_queries_per_category; ++i)
        train_.push_back(make_query(gen, c));
      for (int i = 0; i < cfg_.test_queries_per_category; ++i) test_.push_back(make_query(gen, c));
    }
    for (size_t i = 0; i < train_.size(); ++i) train_[i].id = static_cast<int>(i);
    for (size_t i = 0; i < test_.size(); ++i) test_[i].id = static_cast<int>(train_.size() + i);
  }

  const market_config& config() const { return cfg_; }
  const std::vector<int>& categories() const { return cfg_.categories; }
  const std::vector<product>& products() const { return products_; }
  const product& product_of(const query& q) const {
    detail::require(q.product >= 0 && q.product < static_cast<int>(products_.size()),
                    "query.product", q.product, "is not a product of this market");
    return products_[static_cast<size_t>(q.product)];
  }
  const std::vector<query>& train_queries() const { return train_; }
  const std::vector<query>& test_queries() const { return test_; }
  /// Replaces the product retrieved for each query (train, test in order),
  /// e.g. by sim/retrieval.hpp's candidates instead of the built-in pick.
  void set_query_products(const std::vector<int>& train, const std::vector<int>& test) {
    detail::require_same_length("train", static_cast<std::int64_t>(train.size()), "train_queries",
                                static_cast<std::int64_t>(train_.size()));
    detail::require_same_length("test", static_cast<std::int64_t>(test.size()), "test_queries",
                                static_cast<std::int64_t>(test_.size()));
    for (int id : train) check_product(id);
    for (int id : test) check_product(id);
    for (size_t i = 0; i < train.size(); ++i) train_[i].product = train[i];
    for (size_t i = 0; i < test.size(); ++i) test_[i].product = test[i];
  }

 private:
  void check_product(int id) const {
    detail::require(id >= 0 && id < static_cast<int>(products_.size()), "product", id,
                    "is not a product of this market");
  }
  product make_product(rng& gen, int c, int i) const {
    product p;
    p.id = static_cast<int>(products_.size());
    p.category = c;
    p.title = detail::concat(category(c).name, " item #", i + 1);
    double mean_q = 0;
    for (auto& q : p.quality) {
      q = gen.uniform(0.05, 0.95);
      mean_q += q / attributes_per_category;
    }
    p.rating = std::clamp(4.0 + 2.5 * (mean_q - 0.5) + gen.uniform(-0.3, 0.3), 1.0, 5.0);
    std::array<int, attributes_per_category> order{};
    for (int a = 0; a < attributes_per_category; ++a) order[static_cast<size_t>(a)] = a;
    // Reviews praise the strongest attributes and complain about the weakest.
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return p.quality[static_cast<size_t>(a)] > p.quality[static_cast<size_t>(b)];
    });
    for (int k = 0; k < key_features_per_side; ++k) {
      p.top_features[static_cast<size_t>(k)] = order[static_cast<size_t>(k)];
      p.top_concerns[static_cast<size_t>(k)] =
          order[static_cast<size_t>(attributes_per_category - 1 - k)];
    }
    for (int a = 0; a < attributes_per_category; ++a) {
      const double seen =
          p.quality[static_cast<size_t>(a)] + gen.uniform(-cfg_.spec_noise, cfg_.spec_noise);
      p.spec[static_cast<size_t>(a)] = seen > 0.65 ? 1 : (seen < 0.35 ? -1 : 0);
    }
    // The seller markets what they like: the truth plus a private bias.
    std::array<double, attributes_per_category> appeal{};
    for (int a = 0; a < attributes_per_category; ++a)
      appeal[static_cast<size_t>(a)] =
          p.quality[static_cast<size_t>(a)] + gen.uniform(-cfg_.seller_bias, cfg_.seller_bias);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return appeal[static_cast<size_t>(a)] > appeal[static_cast<size_t>(b)];
    });
    const int claims = 2 + gen.below(2);
    for (int k = 0; k < claims; ++k)
      p.seller_description.push_back(vocabulary::claim_token(c, order[static_cast<size_t>(k)]));
    // One or two distinct hype words.
    const int first = gen.below(vocabulary::num_fillers);
    p.seller_description.push_back(vocabulary::filler_token(first));
    if (gen.below(2) == 1)
      p.seller_description.push_back(vocabulary::filler_token(
          (first + 1 + gen.below(vocabulary::num_fillers - 1)) % vocabulary::num_fillers));
    p.seller_description.push_back(vocabulary::eos);
    return p;
  }

  query make_query(rng& gen, int c) const {
    query q;
    q.category = c;
    const double u = gen.uniform();
    const int n = u < 0.3 ? 1 : (u < 0.75 ? 2 : 3);
    double total = 0;
    while (static_cast<int>(q.needs.size()) < n) {
      const int a = gen.below(attributes_per_category);
      bool dup = false;
      for (const need& x : q.needs) dup = dup || x.attribute == a;
      if (dup) continue;
      need x;
      x.attribute = a;
      x.phrasing = gen.below(2);
      x.weight = gen.uniform(0.5, 1.5);
      total += x.weight;
      q.needs.push_back(x);
    }
    for (need& x : q.needs) x.weight /= total;
    // The recommender retrieves the best of three candidates by true fit, so
    // the product usually, not always, suits the needs.
    const int base = c * cfg_.products_per_category;
    double best = -1;
    for (int k = 0; k < 3; ++k) {
      const int id = base + gen.below(cfg_.products_per_category);
      double fit = 0;
      for (const need& x : q.needs)
        fit +=
            x.weight * products_[static_cast<size_t>(id)].quality[static_cast<size_t>(x.attribute)];
      if (fit > best) {
        best = fit;
        q.product = id;
      }
    }
    q.text = std::string(category(c).name) + ":";
    for (size_t k = 0; k < q.needs.size(); ++k) {
      q.text += k == 0 ? " " : "; ";
      q.text += category(c).attributes[q.needs[k].attribute].need[q.needs[k].phrasing];
    }
    return q;
  }

  market_config cfg_;
  std::vector<product> products_;
  std::vector<query> train_, test_;
};

}  // namespace ktsa::sim
