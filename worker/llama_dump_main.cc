// llama_dump: loads a Hugging Face decoder-only folder (llama, qwen2,
// qwen3, mistral, phi3, gemma, gemma2, gemma3_text), runs it on token ids and reports what it computed and what it
// cost, so that a user can check that a checkpoint loads and behaves as it
// does in transformers.
//
//   llama_dump --model=FOLDER (--ids="1,2,3;4,5" | --random_tokens=S [--batch=B])
//              [--generate=N] [--dtype=float32] [--out=FILE.safetensors]
//
// --ids holds one batch row per ';'-separated group (rows are padded on the
// right). --random_tokens draws B rows of S ids (seed 0) instead.
// The loss is the causal-LM loss of each row predicting itself (padding
// ignored). With --generate=N, N greedy tokens per row with the KV cache.
//
// Written tensors (--out): input_ids [B, S], attention_mask [B, S], logits
// [B, S, V] and hidden [B, S, d] (fp32), loss [], generated [B, N]. A summary
// (shapes, loss, timings, peak resident memory) goes to stdout.
//
// Exit status: 0 on success, 2 for bad flags, 1 when loading or running
// fails; the error names the problem.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/main_guard.h"
#include "common/status_macros.h"
#include "worker/model/compute_threads.h"
#include "worker/model/device_flags.h"
#include "worker/model/labels.h"
#include "worker/model/llama_model.h"
#include "worker/model/torch_tensors.h"
#include "worker/output_paths.h"
#include "worker/prompts/adapter_io.h"
#include "worker/prompts/soft_prompt.h"

ABSL_FLAG(std::string, model, "", "Hugging Face folder (config.json and safetensors weights)");
ABSL_FLAG(std::string, ids, "", "Input token ids, rows separated by ';' (\"1,2,3;4,5\")");
ABSL_FLAG(int, random_tokens, 0, "Instead of --ids: this many random ids per row");
ABSL_FLAG(int, batch, 1, "Rows of random ids (with --random_tokens)");
ABSL_FLAG(int, generate, 0, "Greedy-generate this many new tokens per row (0: none)");
ABSL_FLAG(std::string, dtype, "float32", "float32, bfloat16, float16 or float64");
ABSL_FLAG(int, threads, 0,
          "Compute threads in total, libtorch's and BLAS's together (0: every usable core; "
          "more than the usable cores is cut to them), as mpt_train's --threads");
ABSL_FLAG(std::string, out, "", "Output .safetensors file (optional)");
ABSL_FLAG(std::string, adapter, "",
          "A PEFT CAUSAL_LM prompt adapter folder to put in front of every row, as PEFT does");
ABSL_FLAG(int, task_id, 0, "Task id of every row for a multitask adapter");

namespace mpt {
namespace {

constexpr int kUsageError = 2;
// Rows of --random_tokens at most (the spec's largest batch_size).
constexpr int kMaxBatch = 65'536;
// Positions a row may reach, generation included. Past config.json's
// max_position_embeddings is allowed (transformers sets no limit, and the
// scaled rope types, "dynamic" above all, exist for it); this only bounds
// the work a typo can ask for.
constexpr int64_t kMaxPositions = 65'536;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Peak and current resident memory from /proc/self/status ("" elsewhere).
std::string Memory() {
  std::ifstream in("/proc/self/status");
  std::string line;
  std::string out;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0 || line.rfind("VmRSS:", 0) == 0) {
      absl::StrAppend(&out, out.empty() ? "" : ", ", line);
    }
  }
  return out;
}

absl::StatusOr<c10::ScalarType> ParseDtype(const std::string& name) {
  if (name == "float32") return c10::ScalarType::Float;
  if (name == "bfloat16") return c10::ScalarType::BFloat16;
  if (name == "float16") return c10::ScalarType::Half;
  if (name == "float64") return c10::ScalarType::Double;
  return absl::InvalidArgumentError(
      absl::StrCat("--dtype=", name, " (expected float32, bfloat16, float16 or float64)"));
}

// Rows separated by ';', ids by ','; spaces around an id are allowed. An
// empty row or id (";", "1,2;;3", "1,,2") is an error, not skipped.
absl::StatusOr<std::vector<std::vector<int64_t>>> ParseIds(const std::string& flag) {
  std::vector<std::vector<int64_t>> rows;
  for (absl::string_view row : absl::StrSplit(flag, ';')) {
    const int64_t r = static_cast<int64_t>(rows.size()) + 1;
    if (absl::StripAsciiWhitespace(row).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--ids: row ", r, " is empty"));
    }
    std::vector<int64_t> ids;
    for (absl::string_view item : absl::StrSplit(row, ',')) {
      item = absl::StripAsciiWhitespace(item);
      int64_t id = 0;
      if (item.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--ids: row ", r, " has an empty id (two commas in a row?)"));
      }
      if (!absl::SimpleAtoi(item, &id) || id < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("--ids: \"", absl::CEscape(item.substr(0, 40)), "\" is not a token id"));
      }
      ids.push_back(id);
    }
    rows.push_back(std::move(ids));
  }
  return rows;
}

// The logits [B, S, V] in fp32 dominate what a forward pass holds: refuse a
// batch whose logits alone would not fit in this host's memory.
absl::Status CheckLogitsFit(int64_t batch, int64_t length, int64_t vocab) {
  const int64_t host_bytes = HostMemoryBytes();
  if (host_bytes <= 0) return absl::OkStatus();
  const double host = static_cast<double>(host_bytes);
  const double logits = 4.0 * static_cast<double>(batch) * length * vocab;
  if (logits <= host / 2) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "--batch/--ids: ", batch, " rows of ", length, " tokens need ", logits / (1 << 30),
      " GiB for the logits alone (vocab ", vocab, "); this host has ", host / (1 << 30),
      " GiB: use fewer or shorter rows"));
}

// The --adapter's prompt rows for `batch` rows of task --task_id, [B, nv, d]
// in the model's dtype and device. INVALID_ARGUMENT naming the flag when
// the adapter is not a CAUSAL_LM prompt of this model's hidden size or
// the task is not one of its tasks.
absl::StatusOr<at::Tensor> AdapterRows(const LlamaModel& model, int64_t batch) {
  const std::string folder = absl::GetFlag(FLAGS_adapter);
  ASSIGN_OR_RETURN(Adapter adapter, ReadAdapter(folder));
  RETURN_IF_ERROR(CheckAdapterFitsModel(adapter.info,
                                        static_cast<int>(model.config().hidden_size),
                                        "CAUSAL_LM"));
  const SoftPromptConfig& pc = adapter.prompt.config();
  const int task = absl::GetFlag(FLAGS_task_id);
  const int tasks = pc.kind == PromptKind::kMultitask ? pc.num_tasks : 1;
  if (task < 0 || task >= tasks) {
    return absl::InvalidArgumentError(absl::StrCat("--task_id: ", task, " is not a task of ",
                                                   folder, " (it has ", tasks, ")"));
  }
  adapter.prompt.MoveTo(model.device());
  at::Tensor prompts = adapter.prompt.Forward(
      at::full({batch}, task, at::TensorOptions().dtype(at::kLong).device(model.device())), batch);
  std::cout << "adapter: " << folder << " (" << PromptKindName(pc.kind) << ", "
            << prompts.size(1) << " prompt rows, task " << task << ")" << std::endl;
  return prompts.to(model.dtype());
}

absl::Status Run() {
  ASSIGN_OR_RETURN(c10::ScalarType dtype, ParseDtype(absl::GetFlag(FLAGS_dtype)));
  RETURN_IF_ERROR(CheckDtypeOnDevice(dtype, c10::Device(c10::DeviceType::CPU)));
  // Capped to the usable cores, as mpt_train and the worker do.
  ComputeThreadOptions thread_options;
  thread_options.total = absl::GetFlag(FLAGS_threads);
  ASSIGN_OR_RETURN(ComputeThreads threads, ApplyComputeThreads(thread_options));
  UseThreadsForProducts(&threads, dtype);
  std::cout << Describe(threads) << std::endl;
  std::vector<InputPath> inputs{{"--model", absl::GetFlag(FLAGS_model)},
                                {"--adapter", absl::GetFlag(FLAGS_adapter)}};
  RETURN_IF_ERROR(CheckOutputIsNotAnInput(absl::GetFlag(FLAGS_out), "--out", inputs));
  LlamaLoadOptions options;
  options.dtype = dtype;
  Clock::time_point start = Clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model,
                   LlamaModel::Load(absl::GetFlag(FLAGS_model), options));
  const LlamaConfig& c = model->config();
  std::cout << "loaded " << c.model_type << ": " << model->num_parameters() << " parameters, "
            << c.num_hidden_layers << " layers, hidden " << c.hidden_size << ", heads "
            << c.num_attention_heads << "/" << c.num_key_value_heads << ", vocab "
            << c.vocab_size << ", rope " << RopeTypeName(c.rope_scaling.type) << ", dtype "
            << c10::toString(model->dtype()) << " in " << Seconds(start) << " s (" << Memory()
            << ")" << std::endl;

  try {
    at::NoGradGuard no_grad;
    at::Tensor ids;
    at::Tensor mask;
    const int generate = absl::GetFlag(FLAGS_generate);
    if (absl::GetFlag(FLAGS_random_tokens) > kMaxPositions) {
      return absl::InvalidArgumentError(absl::StrCat("--random_tokens: ",
                                                     absl::GetFlag(FLAGS_random_tokens),
                                                     " is more than ", kMaxPositions, " positions"));
    }
    if (absl::GetFlag(FLAGS_random_tokens) > 0) {
      RETURN_IF_ERROR(CheckLogitsFit(absl::GetFlag(FLAGS_batch),
                                     absl::GetFlag(FLAGS_random_tokens), c.vocab_size));
      at::manual_seed(0);
      ids = at::randint(c.vocab_size,
                        {absl::GetFlag(FLAGS_batch), absl::GetFlag(FLAGS_random_tokens)}, at::kLong);
      mask = at::ones_like(ids);
    } else {
      ASSIGN_OR_RETURN(std::vector<std::vector<int64_t>> rows,
                       ParseIds(absl::GetFlag(FLAGS_ids)));
      size_t length = 0;
      for (const auto& row : rows) length = std::max(length, row.size());
      if (static_cast<int64_t>(length) > kMaxPositions) {
        return absl::InvalidArgumentError(absl::StrCat("--ids: a row of ", length,
                                                       " ids is longer than ", kMaxPositions,
                                                       " positions"));
      }
      RETURN_IF_ERROR(CheckLogitsFit(static_cast<int64_t>(rows.size()),
                                     static_cast<int64_t>(length), c.vocab_size));
      ids = at::zeros({static_cast<int64_t>(rows.size()), static_cast<int64_t>(length)}, at::kLong);
      mask = at::zeros_like(ids);
      for (size_t r = 0; r < rows.size(); ++r) {
        for (size_t i = 0; i < rows[r].size(); ++i) {
          if (rows[r][i] >= c.vocab_size) {
            return absl::InvalidArgumentError(absl::StrCat(
                "--ids: ", rows[r][i], " is outside the vocabulary (", c.vocab_size, ")"));
          }
          ids[r][i] = rows[r][i];
          mask[r][i] = 1;
        }
      }
    }
    const int steps = generate;
    // An adapter's rows go in front of every row, with mask ones and labels
    // -100 (PEFT's PeftModelForCausalLM.forward for prompt learning); the
    // logits and hidden states then have the prompt's positions first.
    at::Tensor prompts;
    if (!absl::GetFlag(FLAGS_adapter).empty()) {
      ASSIGN_OR_RETURN(prompts, AdapterRows(*model, ids.size(0)));
    }
    const int64_t nv = prompts.defined() ? prompts.size(1) : 0;
    // Checked before the forward pass. The last new token is predicted,
    // never fed back: nv prompt rows, S input and N new tokens take
    // nv + S + N - 1 positions.
    const int64_t positions = nv + ids.size(1) + std::max(steps - 1, 0);
    if (positions > kMaxPositions) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--generate: ", steps, " new tokens after ", nv + ids.size(1),
          " prompt and input tokens pass ", kMaxPositions, " positions; at most ",
          std::max<int64_t>(0, kMaxPositions - nv - ids.size(1) + 1), " fit"));
    }
    if (positions > c.max_position_embeddings) {
      std::cout << "note: " << positions << " positions, past config.json's max_position_embeddings ("
                << c.max_position_embeddings << "; rope " << RopeTypeName(c.rope_scaling.type)
                << ")" << std::endl;
    }
    CausalLmInputs in;
    in.inputs_embeds = model->Embed(ids);
    in.attention_mask = mask;
    in.labels = ids.masked_fill(mask == 0, kIgnoreIndex);
    if (prompts.defined()) {
      in.inputs_embeds = at::cat({prompts, in.inputs_embeds}, 1);
      in.attention_mask = at::cat({at::ones({ids.size(0), nv}, mask.options()), mask}, 1);
      in.labels = at::cat({at::full({ids.size(0), nv}, kIgnoreIndex, ids.options()), in.labels}, 1);
    }
    RETURN_IF_ERROR(model->CheckForwardInputs(in));
    start = Clock::now();
    CausalLmOutput out = model->Forward(in);
    const double forward_s = Seconds(start);
    std::cout << "forward [" << absl::StrJoin(ids.sizes(), ", ") << "]: loss "
              << out.loss.item<double>() << " in " << forward_s << " s (" << Memory() << ")"
              << std::endl;

    std::map<std::string, at::Tensor> dump = {
        {"input_ids", ids},
        {"attention_mask", in.attention_mask},
        {"labels", in.labels},
        {"logits", out.logits.to(at::kFloat)},
        {"hidden", out.hidden.to(at::kFloat)},
        {"loss", out.loss},
    };
    if (steps > 0) {
      start = Clock::now();
      // Rows are right-padded: each one continues after its own last real
      // token, so each row decodes on its own, unpadded.
      std::vector<at::Tensor> rows;
      for (int64_t r = 0; r < ids.size(0); ++r) {
        const int64_t length = nv + mask[r].sum().item<int64_t>();
        LlamaDecoderState row_state = model->StartDecoding();
        at::Tensor hidden =
            model->DecodeStep(in.inputs_embeds.narrow(0, r, 1).narrow(1, 0, length), at::Tensor(),
                              at::Tensor(), &row_state);
        std::vector<at::Tensor> tokens;
        for (int i = 0; i < steps; ++i) {
          at::Tensor next = model->LmHead(hidden.narrow(1, hidden.size(1) - 1, 1)).argmax(-1);
          tokens.push_back(next);
          if (i + 1 < steps) hidden = model->DecodeStep(model->Embed(next), {}, {}, &row_state);
        }
        rows.push_back(at::cat(tokens, 1));
      }
      at::Tensor generated = at::cat(rows, 0);
      std::cout << "generated " << steps << " tokens per row in " << Seconds(start) << " s:";
      for (int64_t r = 0; r < generated.size(0); ++r) {
        std::vector<int64_t> row(generated[r].data_ptr<int64_t>(),
                                 generated[r].data_ptr<int64_t>() + steps);
        std::cout << " [" << absl::StrJoin(row, ",") << "]";
      }
      std::cout << std::endl;
      dump["generated"] = generated;
    }
    if (!absl::GetFlag(FLAGS_out).empty()) {
      RETURN_IF_ERROR(SaveSafetensors(absl::GetFlag(FLAGS_out), dump));
      std::cout << "wrote " << absl::GetFlag(FLAGS_out) << std::endl;
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(e.what_without_backtrace());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace mpt

namespace {
int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Runs a Hugging Face decoder-only checkpoint (llama, qwen2, qwen3, mistral, ministral, "
      "phi3, gemma, gemma2, gemma3_text) and reports its outputs.\n  llama_dump --model=FOLDER (--ids=\"1,2,3;4,5\" | --random_tokens=S "
      "[--batch=B]) [--generate=N] [--dtype=float32] [--out=FILE.safetensors]");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::cerr << "llama_dump: unexpected argument \"" << rest[1] << "\"\n";
    return mpt::kUsageError;
  }
  if (absl::GetFlag(FLAGS_model).empty()) {
    std::cerr << "llama_dump: --model is required (see --help)\n";
    return mpt::kUsageError;
  }
  if (absl::GetFlag(FLAGS_threads) < 0) {
    std::cerr << "llama_dump: --threads must be 0 (every usable core) or positive, got "
              << absl::GetFlag(FLAGS_threads) << "\n";
    return mpt::kUsageError;
  }
  if (absl::GetFlag(FLAGS_random_tokens) < 0) {
    std::cerr << "llama_dump: --random_tokens must be positive, got "
              << absl::GetFlag(FLAGS_random_tokens) << "\n";
    return mpt::kUsageError;
  }
  if (absl::GetFlag(FLAGS_ids).empty() == (absl::GetFlag(FLAGS_random_tokens) == 0)) {
    std::cerr << "llama_dump: give either --ids or --random_tokens\n";
    return mpt::kUsageError;
  }
  if (absl::GetFlag(FLAGS_generate) < 0) {
    std::cerr << "llama_dump: --generate must not be negative, got "
              << absl::GetFlag(FLAGS_generate) << "\n";
    return mpt::kUsageError;
  }
  if (absl::GetFlag(FLAGS_batch) < 1 || absl::GetFlag(FLAGS_batch) > mpt::kMaxBatch) {
    std::cerr << "llama_dump: --batch must be in [1, " << mpt::kMaxBatch << "], got "
              << absl::GetFlag(FLAGS_batch) << "\n";
    return mpt::kUsageError;
  }
  absl::Status status = mpt::Run();
  if (!status.ok()) {
    std::cerr << "llama_dump: " << status.message() << "\n";
    return 1;
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) { return mpt::RunMain(argc, argv, Main); }
