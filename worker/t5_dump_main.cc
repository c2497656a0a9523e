// t5_dump: loads a Hugging Face T5 folder, runs it on a few inputs and writes
// what it computed to a safetensors file, so that a user can check that a
// checkpoint loads and behaves as it does in transformers.
//
//   t5_dump --model=FOLDER (--text="..." ... | --ids="1,2,3" ...)
//           [--target="..." ...] [--generate=N] [--dtype=float32]
//           [--device=cpu] --out=FILE.safetensors
//
// --text, --ids and --target may be given several times (one batch row
// each; --target once per input, or once for all). Inputs are padded on the
// right with the pad id; targets with -100.
//
// Written tensors: input_ids [B, S], attention_mask [B, S], encoder_hidden
// [B, S, d], decoder_input_ids [B, L], decoder_hidden [B, L, d] and logits
// [B, L, V] (fp32); with targets, labels [B, L] and loss [] and L is the
// target length; without, L = 1 (the decoder start token alone); with
// --generate=N, generated [B, 1 + n] (transformers' greedy generate
// layout). A summary (shapes, loss, decoded generations) goes to stdout.
//
// Inputs and targets longer than 8192 tokens (kMaxSequenceLength, the
// longest max_input_length of a spec) and --generate above it are refused,
// and so is an --out that is one of the model's or adapter's files.
//
// Exit status: 0 on success, 2 for bad flags, 1 when loading or running
// fails; the error names the problem.
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "common/main_guard.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/spec/spec_loader.h"
#include "common/status_macros.h"
#include "worker/prompts/adapter_io.h"
#include "worker/eval/generation.h"
#include "worker/prompts/prompt_inputs.h"
#include "worker/prompts/soft_prompt.h"
#include "worker/model/t5_model.h"
#include "worker/model/t5_tokenizer.h"
#include "worker/model/torch_tensors.h"
#include "worker/model/labels.h"
#include "worker/model/device_flags.h"
#include "worker/output_paths.h"

ABSL_FLAG(std::string, model, "", "Hugging Face T5 folder (config.json, weights, spiece.model)");
ABSL_FLAG(std::string, out, "", "Output .safetensors file");
ABSL_FLAG(std::string, text, "", "Input text; repeat the flag for a batch");
ABSL_FLAG(std::string, ids, "", "Input token ids \"1,2,3\" (no EOS added); repeatable");
ABSL_FLAG(std::string, target, "", "Target text (EOS added); once per input or once for all");
ABSL_FLAG(int, generate, 0, "Greedy-generate up to this many new tokens (0: none)");
ABSL_FLAG(std::string, dtype, "float32", "float32, bfloat16, float16 or float64");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda, cuda:1, ...");
ABSL_FLAG(std::string, adapter, "",
          "A PEFT prompt adapter folder to put in front of the inputs, as PEFT does");
ABSL_FLAG(int, task_id, 0, "Task id of every input for a multitask adapter");

namespace mpt {
namespace {

constexpr int kUsageError = 2;
// Tokens per input or target row, and --generate, at most: the longest
// max_input_length a spec accepts (T5 has no position table of its own;
// attention grows with the square of the length).
constexpr int64_t kMaxTokens = kMaxSequenceLength;
// The flags that may repeat, taken out of argv before absl parses the rest
// (absl keeps only the last value of a flag).
struct RepeatedFlags {
  std::vector<std::string> texts;
  std::vector<std::string> ids;
  std::vector<std::string> targets;
};

absl::StatusOr<RepeatedFlags> ExtractRepeated(int* argc, char** argv) {
  RepeatedFlags out;
  const std::map<std::string, std::vector<std::string>*> names = {
      {"text", &out.texts}, {"ids", &out.ids}, {"target", &out.targets}};
  int kept = 1;
  for (int i = 1; i < *argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") {  // everything after is positional
      for (; i < *argc; ++i) argv[kept++] = argv[i];
      break;
    }
    absl::string_view body = arg;
    if (!absl::ConsumePrefix(&body, "--") && !absl::ConsumePrefix(&body, "-")) {
      argv[kept++] = argv[i];
      continue;
    }
    std::vector<absl::string_view> parts = absl::StrSplit(body, absl::MaxSplits('=', 1));
    auto it = names.find(std::string(parts[0]));
    if (it == names.end()) {
      argv[kept++] = argv[i];
      continue;
    }
    if (parts.size() == 2) {
      it->second->push_back(std::string(parts[1]));
    } else if (i + 1 < *argc) {
      it->second->push_back(argv[++i]);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", parts[0], " needs a value"));
    }
  }
  *argc = kept;
  return out;
}

absl::StatusOr<std::vector<int>> ParseIds(absl::string_view text, int vocab_size) {
  std::vector<int> ids;
  for (absl::string_view piece : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int id = 0;
    if (!absl::SimpleAtoi(piece, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ids=\"", text, "\": \"", piece, "\" is not an integer"));
    }
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("--ids=\"", text, "\": id ", id,
                                                     " is outside the vocabulary [0, ",
                                                     vocab_size, ")"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat("--ids=\"", text, "\" is empty"));
  return ids;
}

absl::StatusOr<c10::ScalarType> ParseDtype(const std::string& name) {
  if (name == "float32" || name == "f32" || name == "float") return c10::ScalarType::Float;
  if (name == "bfloat16" || name == "bf16") return c10::ScalarType::BFloat16;
  if (name == "float16" || name == "f16" || name == "half") return c10::ScalarType::Half;
  if (name == "float64" || name == "f64" || name == "double") return c10::ScalarType::Double;
  return absl::InvalidArgumentError(
      absl::StrCat("--dtype=", name, ": expected float32, bfloat16, float16 or float64"));
}

// Rows padded on the right to the longest: [B, L] int64.
at::Tensor PadRows(const std::vector<std::vector<int>>& rows, int64_t pad) {
  size_t longest = 0;
  for (const auto& r : rows) longest = std::max(longest, r.size());
  at::Tensor out = at::full({static_cast<int64_t>(rows.size()), static_cast<int64_t>(longest)},
                            pad, at::kLong);
  auto acc = out.accessor<int64_t, 2>();
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t j = 0; j < rows[i].size(); ++j) acc[i][j] = rows[i][j];
  }
  return out;
}

std::string Shape(const at::Tensor& t) { return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]"); }

absl::Status Run(const RepeatedFlags& repeated) {
  const std::string folder = absl::GetFlag(FLAGS_model);
  const std::string out_path = absl::GetFlag(FLAGS_out);
  const int generate = absl::GetFlag(FLAGS_generate);

  T5LoadOptions options;
  ASSIGN_OR_RETURN(options.dtype, ParseDtype(absl::GetFlag(FLAGS_dtype)));
  ASSIGN_OR_RETURN(options.device, ParseDeviceFlag(absl::GetFlag(FLAGS_device)));
  RETURN_IF_ERROR(CheckDtypeOnDevice(options.dtype, options.device));
  if (generate > kMaxTokens) {
    return absl::InvalidArgumentError(absl::StrCat("--generate: ", generate,
                                                   " is more than the limit of ", kMaxTokens,
                                                   " tokens"));
  }
  RETURN_IF_ERROR(CheckOutputIsNotAnInput(
      out_path, "--out", {{"--model", folder}, {"--adapter", absl::GetFlag(FLAGS_adapter)}}));

  ASSIGN_OR_RETURN(std::unique_ptr<T5Model> model, T5Model::Load(folder, options));
  const T5Config& config = model->config();
  std::cout << "model: " << folder << " (" << config.model_type << ", "
            << (config.is_gated_act ? "gated-" : "") << T5ActivationName(config.dense_act)
            << ", d_model "
            << config.d_model << ", " << config.num_layers << "+" << config.num_decoder_layers
            << " layers, vocab " << config.vocab_size << ", "
            << (config.scale_decoder_outputs ? "scaled" : "unscaled") << " LM head, "
            << model->num_parameters() << " parameters)\n";

  // The tokenizer is needed for text; with ids only it is optional.
  std::unique_ptr<T5Tokenizer> tokenizer;
  {
    absl::StatusOr<std::unique_ptr<T5Tokenizer>> loaded = T5Tokenizer::Load(folder);
    if (loaded.ok()) {
      tokenizer = *std::move(loaded);
    } else if (!repeated.texts.empty() || !repeated.targets.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--text/--target need the tokenizer: ", loaded.status().message()));
    }
  }

  std::vector<std::vector<int>> inputs;
  for (const std::string& text : repeated.texts) inputs.push_back(tokenizer->Encode(text));
  for (const std::string& ids : repeated.ids) {
    ASSIGN_OR_RETURN(std::vector<int> parsed, ParseIds(ids, config.vocab_size));
    inputs.push_back(std::move(parsed));
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (static_cast<int64_t>(inputs[i].size()) > kMaxTokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          i < repeated.texts.size() ? "--text" : "--ids", ": input ", i + 1, " has ",
          inputs[i].size(), " tokens, more than the limit of ", kMaxTokens));
    }
  }
  std::vector<std::vector<int>> targets;
  if (!repeated.targets.empty()) {
    if (repeated.targets.size() != 1 && repeated.targets.size() != inputs.size()) {
      return absl::InvalidArgumentError(absl::StrCat("got ", repeated.targets.size(),
                                                     " --target flags for ", inputs.size(),
                                                     " inputs (give one per input, or one)"));
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      targets.push_back(tokenizer->Encode(repeated.targets[repeated.targets.size() == 1 ? 0 : i]));
      if (static_cast<int64_t>(targets.back().size()) > kMaxTokens) {
        return absl::InvalidArgumentError(absl::StrCat("--target: ", targets.back().size(),
                                                       " tokens, more than the limit of ",
                                                       kMaxTokens));
      }
    }
  }

  std::map<std::string, at::Tensor> dump;
  try {
    at::NoGradGuard no_grad;
    const c10::Device device = options.device;
    at::Tensor input_ids = PadRows(inputs, config.pad_token_id);
    at::Tensor attention_mask = at::zeros_like(input_ids);
    for (size_t i = 0; i < inputs.size(); ++i) {
      attention_mask[static_cast<int64_t>(i)].narrow(0, 0, static_cast<int64_t>(inputs[i].size())).fill_(1);
    }
    const int64_t batch = input_ids.size(0);

    T5ForwardInputs in;
    in.inputs_embeds = model->Embed(input_ids.to(device));
    in.attention_mask = attention_mask.to(device);
    at::Tensor decoder_input_ids;
    if (!targets.empty()) {
      at::Tensor labels = PadRows(targets, kIgnoreIndex);
      in.labels = labels.to(device);
      decoder_input_ids = model->ShiftRight(labels);
      dump["labels"] = labels;
    } else {
      decoder_input_ids = at::full({batch, 1}, config.decoder_start_token_id, at::kLong);
    }
    in.decoder_inputs_embeds = model->Embed(decoder_input_ids.to(device));
    if (!absl::GetFlag(FLAGS_adapter).empty()) {
      ASSIGN_OR_RETURN(Adapter adapter, ReadAdapter(absl::GetFlag(FLAGS_adapter)));
      RETURN_IF_ERROR(CheckAdapterFitsModel(adapter.info, static_cast<int>(config.d_model)));
      const SoftPromptConfig& pc = adapter.prompt.config();
      const int task = absl::GetFlag(FLAGS_task_id);
      if (pc.kind == PromptKind::kMultitask && (task < 0 || task >= pc.num_tasks)) {
        return absl::InvalidArgumentError(absl::StrCat("--task_id: ", task, " is not a task of ",
                                                       "the adapter (it has ", pc.num_tasks, ")"));
      }
      adapter.prompt.MoveTo(device);
      at::Tensor prompts =
          adapter.prompt.Forward(at::full({batch}, task, at::TensorOptions().dtype(at::kLong).device(device)), batch);
      const PromptLayout layout = PromptLayout::Peft(pc.kind == PromptKind::kMultitask,
                                                     pc.num_virtual_tokens,
                                                     pc.num_transformer_submodules);
      if (!targets.empty()) {
        in = BuildPromptedInputs(*model, prompts, layout, input_ids.to(device), in.attention_mask,
                                 in.labels);
      } else {
        EncoderInputs enc = BuildPromptedEncoderInputs(*model, prompts, pc.num_virtual_tokens,
                                                       input_ids.to(device), in.attention_mask);
        in.inputs_embeds = enc.inputs_embeds;
        in.attention_mask = enc.attention_mask;
        at::Tensor rows = DecoderPromptRows(*model, prompts, layout, batch);
        if (rows.defined()) in.decoder_inputs_embeds = at::cat({rows, in.decoder_inputs_embeds}, 1);
      }
      std::cout << "adapter: " << absl::GetFlag(FLAGS_adapter) << " ("
                << PromptKindName(pc.kind) << ", " << pc.total_tokens() << " prompt rows, task "
                << task << ")\n";
    }
    RETURN_IF_ERROR(model->CheckForwardInputs(in));
    T5Output out = model->Forward(in);

    dump["input_ids"] = input_ids;
    dump["attention_mask"] = attention_mask;
    dump["decoder_input_ids"] = decoder_input_ids;
    dump["encoder_hidden"] = out.encoder_hidden.to(at::kFloat);
    dump["decoder_hidden"] = out.decoder_hidden.to(at::kFloat);
    dump["logits"] = out.logits.to(at::kFloat);
    std::cout << "input_ids " << Shape(input_ids) << ", encoder_hidden " << Shape(out.encoder_hidden)
              << ", decoder_hidden " << Shape(out.decoder_hidden) << ", logits "
              << Shape(out.logits) << "\n";
    if (out.loss.defined()) {
      dump["loss"] = out.loss.to(at::kFloat).cpu();
      std::cout << "loss " << out.loss.item<double>() << "\n";
    }
    if (generate > 0) {
      at::Tensor generated = GreedyGenerate(*model, in.inputs_embeds, in.attention_mask, generate);
      generated = generated.cpu();
      dump["generated"] = generated;
      std::cout << "generated " << Shape(generated) << "\n";
      for (int64_t i = 0; i < batch; ++i) {
        std::vector<int> row;
        for (int64_t j = 0; j < generated.size(1); ++j) {
          row.push_back(static_cast<int>(generated[i][j].item<int64_t>()));
        }
        std::cout << "  [" << i << "] " << absl::StrJoin(row, " ");
        if (tokenizer != nullptr) std::cout << "  \"" << tokenizer->Decode(row) << "\"";
        std::cout << "\n";
      }
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(e.what_without_backtrace());
  }
  RETURN_IF_ERROR(SaveSafetensors(out_path, dump, {{"model", folder}}));
  std::cout << "wrote " << out_path << "\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace mpt

namespace {
int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Runs a Hugging Face T5 checkpoint and dumps its outputs.\n"
      "  t5_dump --model=FOLDER (--text=\"...\" ... | --ids=\"1,2,3\" ...) "
      "[--target=\"...\" ...] [--generate=N] --out=FILE.safetensors");
  absl::StatusOr<mpt::RepeatedFlags> repeated = mpt::ExtractRepeated(&argc, argv);
  if (!repeated.ok()) {
    std::cerr << "t5_dump: " << repeated.status().message() << "\n";
    return mpt::kUsageError;
  }
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::cerr << "t5_dump: unexpected argument \"" << rest[1] << "\"\n";
    return mpt::kUsageError;
  }
  if (absl::GetFlag(FLAGS_model).empty() || absl::GetFlag(FLAGS_out).empty()) {
    std::cerr << "t5_dump: --model and --out are required (see --help)\n";
    return mpt::kUsageError;
  }
  if (repeated->texts.empty() && repeated->ids.empty()) {
    std::cerr << "t5_dump: give at least one --text or --ids\n";
    return mpt::kUsageError;
  }
  if (absl::GetFlag(FLAGS_generate) < 0) {
    std::cerr << "t5_dump: --generate must not be negative\n";
    return mpt::kUsageError;
  }
  absl::Status status = mpt::Run(*repeated);
  if (!status.ok()) {
    std::cerr << "t5_dump: " << status.message() << "\n";
    return 1;
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) { return mpt::RunMain(argc, argv, Main); }
