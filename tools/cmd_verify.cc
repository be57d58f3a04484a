#include <iostream>

#include "command.h"
#include "moepack/verify.h"

namespace moepack::cli {

Action DefineVerify(CLI::App& sub) {
  struct Flags {
    std::string src, dst;
    RuleFlags rules;
    int threads = 0;
    bool json = false, forward = false;
  };
  auto f = std::make_shared<Flags>();
  sub.add_option("SRC", f->src, "The original checkpoint")->required();
  sub.add_option("DST", f->dst, "The converted checkpoint")->required();
  AddRuleFlags(sub, f->rules);
  sub.add_option("--threads", f->threads, "Hashing threads (default: one per core)")->check(CLI::Range(0, 64));
  sub.add_flag("--json", f->json, "Print the result as JSON");
  sub.add_flag("--forward", f->forward,
               "Also run a reference MoE layer per layer with SRC's and DST's experts; the outputs must be equal");
  return [f] {
    VerifyOptions o;
    o.model_type = f->rules.model_type;
    o.rules_file = f->rules.rules;
    o.threads = f->threads;
    o.forward = f->forward;
    o.source_layout = ToSourceLayout(f->rules.source_layout);
    auto r = Verify(f->src, f->dst, o);
    if (!r.ok()) return Fail(r.status());
    if (f->json) {
      std::cout << VerifyToJson(*r, f->forward) << "\n";
    } else if (r->ok) {
      const std::string change = r->dtype.empty() ? "" : r->dtype == "fp8" ? ", quantized to fp8" : ", dequantized to " + r->dtype;
      std::cout << "verified: " << f->dst << " is " << f->src << " converted to " << r->to << change << " (" << r->tensors
                << " tensors, " << r->pieces << " pieces, " << r->bytes_hashed << " bytes hashed)\n";
      for (const auto& c : r->forward) {
        std::cout << "forward: " << c.layer << " max |diff| = " << c.max_abs_diff << " over " << c.experts_run
                  << " routed experts\n";
      }
    }
    if (!r->ok) return Fail(Status::Mismatch("verify: " + r->problem));
    return kExitOk;
  };
}

}  // namespace moepack::cli
