// stage_bench: times one MPT stage's training step on a model folder.
//
//   stage_bench --model=demo/model --stage=distillation --batch_size=8
//       --input_length=64 --target_length=16 --num_virtual_tokens=100
//
// The batch is random token ids of exactly the stated lengths (EOS
// included), so the figures depend only on the shapes. The loop is the
// product's own: PromptTrainer with the stage's step function and AdamW.
// Prints step time, tokens per second (real input + target tokens, the
// prompt not counted), the process's CPU time per step (user + system, all
// threads: less disturbed by other load than wall time; tokens per CPU-second
// are its throughput figure), the threads used
// (worker/model/compute_threads.h, the same choice as the worker's) and the
// process's peak resident memory; --json prints one JSON object instead.
// tools/bench/peft_bench.py times the same steps with PEFT and transformers.
//
// --lanes=L (CPU) runs L copies of the stage at once, each on its own
// thread with one compute thread (worker/training/lanes.h), as a worker
// with L lanes trains L tasks: step time is per lane, tokens/s, FLOP/s and
// MFU are the machine's (every lane's steps over the span from the first
// timed step's start to the last lane's end, against the matmul peak
// measured in L lanes at once).
//
// --pack=K (source stage) trains K source prompts in one pass
// (worker/training/packed_trainer.h): each step holds every task's own batch
// of --batch_size, and tokens/s count all of them, so the figure is the
// worker's throughput over K tasks. --length_bucket_batches=N turns on
// TrainSpec.length_bucket_batches; with --length_spread the printed real-
// token fraction shows how much of each batch is padding.
//
// The model folder's config.json model_type picks the family, as the worker
// does (worker/lm/model_family.h): T5 (encoder-decoder, prompt before the
// encoder) or a decoder-only Llama / Qwen2 / Mistral model behind the same
// PromptedLanguageModel seam (worker/lm/causal_prompted_model.h: each row is
// prompt + input + target, loss on the target). No tokenizer is read.
// --dtype sets the frozen weights' dtype (prompts stay fp32). The loss of
// every step (the warm-up's first) is printed, so a run also shows that the
// model trains.
//
// Model FLOPs per step count the matrix products only (2 m n k each):
//   forward   T5: every product of the encoder (prompt + input positions),
//             the decoder (target positions) and the LM head;
//             decoder-only: every layer over the prompt + input + target
//             positions (eager attention: all T x T scores), the LM head at
//             the target-predicting positions only;
//   backward  what prompt tuning needs: gradients with respect to
//             activations only, never weights: 1x the forward product for
//             each weight product, 2x for each activation x activation
//             product (attention scores and the weighted sum of values);
//             T5: the first decoder block's self-attention, which does not
//             depend on the prompt, has no backward; decoder-only: every
//             position follows the prompt, so every product has one;
//   teacher   (distillation) one more forward with the teacher's prompt,
//             for the rows not served from the teacher cache.
// (The decoder-only rule, with the LM head at every position as
// transformers computes it, equals what torch's FlopCounterMode counts for
// PEFT's step: tools/bench/peft_bench.py --count_flops.)
// Element-wise work (softmax, norms, the losses) is not counted. The counts
// are worker/model/model_flops.h's, which the worker's MFU metric uses too,
// and the peak is worker/model/matmul_peak.h's. MFU is
// those FLOPs per second over this machine's matrix-multiply peak, measured
// in the same run in the dtype the step's products run in (the weights'
// dtype, or bf16 under --autocast=bf16): on the CPU with the same threads
// (best of a timed 1024 x 1024 x 1024 at::mm and the step's largest product
// shapes); on CUDA best of 8192^3 and the step's largest shapes, each step
// timed after a device synchronisation.
#include <sys/resource.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/profiler_legacy.h>

#include "common/main_guard.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/collectives/communicator.h"
#include "worker/model/autocast.h"
#include "worker/model/compute_threads.h"
#include "worker/model/matmul_peak.h"
#include "worker/model/model_flops.h"
#include "worker/training/mpt_stages.h"
#include "worker/training/packed_trainer.h"
#include "worker/training/prompt_trainer.h"
#include "worker/training/lanes.h"
#include "worker/training/teacher_cache.h"
#include "worker/lm/base_model_loader.h"
#include "worker/lm/causal_prompted_model.h"
#include "worker/lm/model_family.h"
#include "worker/lm/t5_prompted_model.h"
#include "worker/model/llama_config.h"
#include "worker/model/t5_model.h"
#include "worker/prompts/prompted_model.h"

ABSL_FLAG(std::string, model, "",
          "Model folder (config.json + safetensors); config.json's model_type picks the family "
          "(T5: encoder-decoder, Llama / Qwen2 / Mistral: decoder-only), as the worker does.");
ABSL_FLAG(std::string, dtype, "auto",
          "The frozen weights' dtype: auto (as the worker: a decoder-only model in the bfloat16 "
          "its config.json states, float32 otherwise), float32, bfloat16 or float16 (stored "
          "weights are converted; prompts stay fp32).");
ABSL_FLAG(std::string, stage, "source", "source, distillation or target.");
ABSL_FLAG(int, batch_size, 8, "Examples per step.");
ABSL_FLAG(int, input_length, 64, "Input tokens per example (EOS included).");
ABSL_FLAG(int, target_length, 16, "Target tokens per example (EOS included).");
ABSL_FLAG(int, num_virtual_tokens, 100, "Prompt length.");
ABSL_FLAG(int, num_transformer_submodules, 1,
          "PromptSpec.num_transformer_submodules (T5: 2 also puts a multitask prompt's second "
          "half before the decoder, as PEFT does).");
ABSL_FLAG(int, num_tasks, 4, "Tasks mixed in a batch (distillation, target).");
ABSL_FLAG(int, examples_per_task, 0, "Training examples per task (0: batch_size).");
ABSL_FLAG(double, length_spread, 0.0,
          "0: every example has exactly the stated lengths; s in (0, 1): each example's input "
          "and target lengths are drawn uniformly from [(1 - s) * length, length].");
ABSL_FLAG(int, steps, 5, "Timed steps.");
ABSL_FLAG(int, teacher_cache_mib, -1,
          "Distillation: teacher outputs kept across steps, MiB (-1: the product's default, "
          "0: none). Use --warmup_steps to time the steady state once every example is cached.");
ABSL_FLAG(int, warmup_steps, 1, "Untimed steps first.");
ABSL_FLAG(int, pack, 0,
          "Source stage: 0 trains one prompt with PromptTrainer; K >= 1 trains K source prompts in "
          "one pass (PackedPromptTrainer), each task drawing its own batch of --batch_size, so a "
          "step holds K x batch_size examples. Tokens/s count every task's tokens.");
ABSL_FLAG(int, length_bucket_batches, 0,
          "TrainSpec.length_bucket_batches (>= 2: length bucketing over windows of that many "
          "batches; sampling becomes proportional). Use with --length_spread and "
          "--examples_per_task well above --batch_size.");
ABSL_FLAG(int, threads, 0,
          "Total compute threads, split between libtorch and BLAS as the worker splits them "
          "(0: every usable core).");
ABSL_FLAG(int, intra_op_threads, 0, "Measurement override: libtorch intra-op threads.");
ABSL_FLAG(bool, keep_blas_kernels, false,
          "Measurement override: keep the OpenBLAS kernels the library picked for this CPU "
          "(default: the ones measured faster on it, as the worker runs).");
ABSL_FLAG(int, blas_threads, 0,
          "Measurement override: OpenBLAS threads (-1: leave them as OPENBLAS_NUM_THREADS or "
          "OpenBLAS's default set them).");
ABSL_FLAG(int, lanes, 1,
          "CPU: L >= 2 runs L copies of the stage side by side, one compute thread each, as "
          "the worker's lanes do; the figures are then the machine's (all lanes), and the "
          "peak is measured in L lanes at once.");
ABSL_FLAG(bool, measure_peak, true, "Time fp32 matrix products for the MFU figure.");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda[:N].");
ABSL_FLAG(std::string, autocast, "off",
          "off, or bf16: the frozen model under bf16 autocast, prompts fp32 (as the worker's "
          "--autocast).");
ABSL_FLAG(bool, json, false, "Print one JSON object.");
ABSL_FLAG(std::string, trace, "",
          "Write libtorch's profiler trace of the steps (Chrome trace JSON) to this file; "
          "tools/bench/trace_ops.py sums it per operator. The profiler slows every operator.");

namespace mpt {
namespace {

using Clock = std::chrono::steady_clock;

double CpuSeconds() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         1e-6 * (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

double PeakRssMiB() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // Linux reports KiB
}

// Records when each step finished.
class StepClock : public ProgressSink {
 public:
  void OnEvent(const ProgressEvent& e) override {
    if (e.kind == ProgressKind::kStep && ++seen % every == 0) {
      // The step's queued GPU work (backward, AdamW) counts in its time.
      if (cuda_device >= 0) torch::cuda::synchronize(cuda_device);
      times.push_back(Clock::now());
      cpu.push_back(CpuSeconds());
      hits.push_back(cache != nullptr ? cache->hits() : 0);
      loss.push_back(e.losses.empty() ? std::nan("") : e.losses.front().second);
      misses.push_back(cache != nullptr ? cache->misses() : 0);
    }
  }
  const TeacherCache* cache = nullptr;
  int cuda_device = -1;
  int every = 1;  // step events per step (one per task of a pack)
  int64_t seen = 0;
  std::vector<int64_t> hits, misses;
  std::vector<Clock::time_point> times;
  std::vector<double> cpu;
  std::vector<double> loss;  // the step's total loss (the last task's, in a pack)
};

std::vector<std::vector<TokenizedExample>> RandomTasks(int tasks, int per_task, int vocab,
                                                       int max_input, int max_target,
                                                       double spread) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> id(3, vocab - 1);
  auto length = [&](int max) {
    const int min = std::max(1, static_cast<int>(std::ceil((1 - spread) * max)));
    return std::uniform_int_distribution<int>(min, max)(rng);
  };
  std::vector<std::vector<TokenizedExample>> out(tasks);
  for (int k = 0; k < tasks; ++k) {
    for (int i = 0; i < per_task; ++i) {
      const int input_length = spread > 0 ? length(max_input) : max_input;
      const int target_length = spread > 0 ? length(max_target) : max_target;
      TokenizedExample e;
      for (int j = 0; j + 1 < input_length; ++j) e.input_ids.push_back(id(rng));
      e.input_ids.push_back(1);
      for (int j = 0; j + 1 < target_length; ++j) e.target_ids.push_back(id(rng));
      e.target_ids.push_back(1);
      e.task_id = k;
      out[k].push_back(std::move(e));
    }
  }
  return out;
}

absl::Status Main() {
  const std::string stage = absl::GetFlag(FLAGS_stage);
  if (stage != "source" && stage != "distillation" && stage != "target") {
    return absl::InvalidArgumentError("--stage: source, distillation or target");
  }
  ComputeThreadOptions thread_options;
  thread_options.total = absl::GetFlag(FLAGS_threads);
  thread_options.intra_op_override = absl::GetFlag(FLAGS_intra_op_threads);
  thread_options.blas_override = std::max(0, absl::GetFlag(FLAGS_blas_threads));
  thread_options.leave_blas = absl::GetFlag(FLAGS_blas_threads) < 0;
  thread_options.keep_blas_kernels = absl::GetFlag(FLAGS_keep_blas_kernels);
  ASSIGN_OR_RETURN(ComputeThreads threads, ApplyComputeThreads(thread_options));
  ASSIGN_OR_RETURN(AutocastMode autocast, ParseAutocast(absl::GetFlag(FLAGS_autocast)));
  c10::Device device(c10::DeviceType::CPU);
  try {
    device = c10::Device(absl::GetFlag(FLAGS_device));
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("--device: ", e.what_without_backtrace()));
  }
  BaseModelOptions load;
  load.device = device;
  RETURN_IF_ERROR(ApplyModelDtypeFlag(absl::GetFlag(FLAGS_dtype), &load));
  const std::string folder = absl::GetFlag(FLAGS_model);
  ASSIGN_OR_RETURN(ModelKind kind, ReadModelKind(folder));
  const auto load_start = Clock::now();
  // The family behind the seam, as the worker loads it (without a
  // tokenizer), and what the FLOP count and the peak's shapes need of its
  // config.
  ASSIGN_OR_RETURN(std::shared_ptr<const PromptedLanguageModel> lm,
                   LoadPromptedModel(folder, load));
  // (batch, prompt, input, target, decoder prefix, distillation)
  std::function<StepFlops(int64_t, int64_t, int64_t, int64_t, int64_t, bool)> count_flops;
  int64_t ff_width = 0;  // the widest feed-forward product's output
  const bool causal = kind.family == ModelFamily::kDecoderOnly;
  if (causal) {
    const LlamaConfig config = dynamic_cast<const CausalPromptedModel&>(*lm).llama().config();
    count_flops = [config](int64_t b, int64_t p, int64_t i, int64_t t, int64_t, bool distill) {
      return CountCausalStepFlops(config, b, p, i, t, distill);
    };
    ff_width = config.intermediate_size;
  } else {
    const T5Config config = dynamic_cast<const T5PromptedModel&>(*lm).t5().config();
    count_flops = [config](int64_t b, int64_t p, int64_t i, int64_t t, int64_t prefix,
                           bool distill) {
      StepFlops f = CountT5StepFlops(config, b, p + i, prefix, t);
      // Teachers are plain prompts: no decoder prefix.
      if (distill) f.teacher = CountT5StepFlops(config, b, p + i, 0, t).forward;
      return f;
    };
    ff_width = config.d_ff;
  }
  const double load_seconds = std::chrono::duration<double>(Clock::now() - load_start).count();
  const PromptedLanguageModel& model = *lm;
  if (model.device().is_cpu()) {
    // As the worker: bf16 / fp16 products run in libtorch's kernels.
    UseThreadsForProducts(&threads, ProductDtype(model.dtype(), autocast));
  }
  const double rss_after_load = PeakRssMiB();

  const int pack = absl::GetFlag(FLAGS_pack);
  if (pack < 0 || (pack > 0 && stage != "source")) {
    return absl::InvalidArgumentError("--pack: K >= 1 applies to --stage=source only");
  }
  const int tasks = stage == "source" ? std::max(1, pack) : absl::GetFlag(FLAGS_num_tasks);
  const int batch = absl::GetFlag(FLAGS_batch_size);
  const int per_task = absl::GetFlag(FLAGS_examples_per_task) > 0
                           ? absl::GetFlag(FLAGS_examples_per_task)
                           : batch;
  const double spread = absl::GetFlag(FLAGS_length_spread);
  if (spread < 0 || spread >= 1) return absl::InvalidArgumentError("--length_spread: [0, 1)");
  auto data = RandomTasks(tasks, per_task, static_cast<int>(model.vocab_size()),
                          absl::GetFlag(FLAGS_input_length), absl::GetFlag(FLAGS_target_length),
                          spread);

  mpt::v1::PromptSpec prompt_spec;
  prompt_spec.set_num_virtual_tokens(absl::GetFlag(FLAGS_num_virtual_tokens));
  const int submodules = absl::GetFlag(FLAGS_num_transformer_submodules);
  if (submodules != 1 && submodules != 2) {
    return absl::InvalidArgumentError("--num_transformer_submodules: 1 or 2");
  }
  prompt_spec.set_num_transformer_submodules(submodules);
  const int64_t decoder_prefix =
      PromptLayout::Peft(true, prompt_spec.num_virtual_tokens(), submodules)
          .decoder_prefix_length();
  prompt_spec.set_num_ranks(1);
  SoftPromptConfig config;
  config.kind = stage == "source" ? PromptKind::kPromptTuning : PromptKind::kMultitask;
  config.num_virtual_tokens = prompt_spec.num_virtual_tokens();
  config.num_transformer_submodules = submodules;
  config.token_dim = static_cast<int>(model.hidden_size());
  config.num_tasks = tasks;
  if (pack > 0) config.num_tasks = 1;
  const int lanes = absl::GetFlag(FLAGS_lanes);
  if (lanes < 1) return absl::InvalidArgumentError("--lanes: must be >= 1");
  if (lanes > 1 && !model.device().is_cpu()) {
    return absl::InvalidArgumentError("--lanes: L >= 2 applies to the CPU only");
  }

  TrainerOptions options;
  const int warmup = absl::GetFlag(FLAGS_warmup_steps), steps = absl::GetFlag(FLAGS_steps);
  options.train.set_steps(warmup + steps);
  options.train.set_batch_size(batch);
  options.train.mutable_optimizer()->set_learning_rate(0.3);
  options.train.mutable_optimizer()->set_schedule("constant");
  options.train.mutable_optimizer()->set_max_grad_norm(1.0);
  const int bucket_batches = absl::GetFlag(FLAGS_length_bucket_batches);
  options.train.set_length_bucket_batches(bucket_batches);
  // Bucketing applies to proportional sampling only.
  options.sampling = bucket_batches >= 2 ? TaskSampling::kProportional : TaskSampling::kUniform;
  options.stage = stage;
  options.log_every = 1;  // StepClock times every step

  // One lane's run: its own prompts, teacher cache and step clock; the
  // model and the data are shared (read only).
  struct Lane {
    StepClock clock;
    std::shared_ptr<TeacherCache> teacher_cache;
    Clock::time_point start;
    double cpu_start = 0;
  };
  std::vector<Lane> lane_runs(lanes);
  auto train = [&](Lane& lane) -> absl::Status {
    ASSIGN_OR_RETURN(SoftPrompt prompt, SoftPrompt::Random(config, 7));
    prompt.MoveTo(model.device());
    std::vector<SoftPrompt> pack_prompts;
    for (int k = 0; k < pack; ++k) {
      ASSIGN_OR_RETURN(SoftPrompt p, SoftPrompt::Random(config, 7 + k));
      p.MoveTo(model.device());
      pack_prompts.push_back(std::move(p));
    }
    StepClock& clock = lane.clock;
    if (model.device().is_cuda()) {
      clock.cuda_device = model.device().has_index() ? model.device().index() : 0;
    }
    at::Tensor teachers;
    StepFunction step;
    if (stage == "distillation") {
      teachers = at::randn({tasks, config.total_tokens(), config.token_dim}).to(model.device());
      DistillationLoss loss;
      if (absl::GetFlag(FLAGS_teacher_cache_mib) >= 0) {
        loss.teacher_cache_bytes = int64_t{absl::GetFlag(FLAGS_teacher_cache_mib)} << 20;
      }
      // As RunDistillation sizes it: logits kept too when every example's fit.
      lane.teacher_cache = TeacherCache::ForExamples(
          loss.teacher_cache_bytes,
          static_cast<double>(tasks) * per_task * absl::GetFlag(FLAGS_target_length),
          model.vocab_size(), model.hidden_size(), c10::elementSize(model.dtype()));
      loss.teacher_cache = lane.teacher_cache;
      step = MakeDistillationStep(model, prompt_spec, &prompt, teachers, loss);
      clock.cache = lane.teacher_cache.get();
    } else {
      step = MakePlmStep(model,
                         PromptLayout::Peft(config.kind == PromptKind::kMultitask,
                                            config.num_virtual_tokens, submodules),
                         &prompt);
    }
    LocalCommunicator comm;
    lane.start = Clock::now();
    lane.cpu_start = CpuSeconds();
    if (pack > 0) {
      // Each task logs every step; the clock keeps the last task's event of
      // each step (the step's end).
      std::vector<PackMember> members;
      std::vector<const SoftPrompt*> prompt_ptrs;
      for (int k = 0; k < pack; ++k) {
        PackMember m;
        m.train = options.train;
        m.task = absl::StrCat("task", k);
        m.prompt = &pack_prompts[k];
        m.examples = &data[k];
        m.log_every = 1;
        members.push_back(std::move(m));
        prompt_ptrs.push_back(&pack_prompts[k]);
      }
      clock.every = pack;
      PackedPromptTrainer trainer(stage, std::move(members), 0, &comm, &clock, nullptr);
      PackedStepFunction packed_step = MakePackedPlmStep(
          model, PromptLayout::Peft(false, config.num_virtual_tokens, 1), prompt_ptrs);
      ASSIGN_OR_RETURN(std::vector<TrainResult> results, trainer.Run(packed_step));
    } else {
      PromptTrainer trainer(options, &prompt, &data, 0, &comm, &clock, nullptr);
      ASSIGN_OR_RETURN(TrainResult result, trainer.Run(step, nullptr));
    }
    if (static_cast<int>(clock.times.size()) != warmup + steps) {
      return absl::InternalError("the trainer reported fewer steps than it ran");
    }
    return absl::OkStatus();
  };
  {
    // Training (and the timed steps) under the chosen precision; the peak
    // below is measured outside it, in the stated dtype.
    // One lane runs on this thread as it is (RunInLanes changes nothing).
    AutocastScope autocast_scope(model.device(), autocast);
    // libtorch's profiler over every step (warm-up included); it writes the
    // trace when it goes out of scope.
    std::unique_ptr<torch::autograd::profiler::RecordProfile> trace;
    if (!absl::GetFlag(FLAGS_trace).empty()) {
      trace = std::make_unique<torch::autograd::profiler::RecordProfile>(absl::GetFlag(FLAGS_trace));
    }
    for (const absl::Status& s :
         RunInLanes(lanes, lanes, model.device(), [&](size_t l) { return train(lane_runs[l]); })) {
      RETURN_IF_ERROR(s);
    }
  }
  // Per lane: its timed steps' span. The machine: from the first lane's
  // first timed step's start to the last lane's end.
  double lane_seconds = 0;
  auto timed_from = [&](const Lane& lane) {
    return warmup > 0 ? lane.clock.times[warmup - 1] : lane.start;
  };
  Clock::time_point span_start = timed_from(lane_runs[0]), span_end = lane_runs[0].clock.times.back();
  for (const Lane& lane : lane_runs) {
    lane_seconds +=
        std::chrono::duration<double>(lane.clock.times.back() - timed_from(lane)).count() / lanes;
    span_start = std::min(span_start, timed_from(lane));
    span_end = std::max(span_end, lane.clock.times.back());
  }
  const double span_seconds = std::chrono::duration<double>(span_end - span_start).count();
  // Process CPU over the same span (every lane's steps), per lane-step.
  double cpu_first = lane_runs[0].clock.cpu.back(), cpu_last = 0;
  for (const Lane& lane : lane_runs) {
    cpu_first = std::min(cpu_first, warmup > 0 ? lane.clock.cpu[warmup - 1] : lane.cpu_start);
    cpu_last = std::max(cpu_last, lane.clock.cpu.back());
  }
  const double cpu_seconds = (cpu_last - cpu_first) / lanes;
  const StepClock& clock = lane_runs[0].clock;
  const TeacherCache* teacher_cache = lane_runs[0].teacher_cache.get();
  const double seconds = lane_seconds;
  const double step_ms = 1000.0 * seconds / steps;
  const double peak = PeakRssMiB();

  // The timed steps' batches again, as the trainer drew them: real tokens
  // and padded positions.
  std::vector<int> sizes;
  for (const auto& set : data) sizes.push_back(static_cast<int>(set.size()));
  double real_tokens = 0, positions = 0, real_tokens_timed = 0;
  const LengthBuckets buckets = MakeLengthBuckets(data, bucket_batches);
  for (int s = 0; s < warmup + steps; ++s) {
    std::vector<const TokenizedExample*> examples;
    if (pack > 0) {
      for (int k = 0; k < pack; ++k) {
        const LengthBuckets one = MakeLengthBuckets(data[k], bucket_batches);
        for (const ExampleRef& r : SampleBatch(options.train.seed(), s, batch, {sizes[k]},
                                               TaskSampling::kProportional, &one)) {
          examples.push_back(&data[k][r.index]);
        }
      }
    } else {
      for (const ExampleRef& r :
           SampleBatch(options.train.seed(), s, batch, sizes, options.sampling, &buckets)) {
        examples.push_back(&data[r.task][r.index]);
      }
    }
    Batch b = Collate(examples, 0);
    const double real = static_cast<double>(b.input_tokens + b.target_tokens);
    real_tokens += real;
    positions += static_cast<double>(b.input_ids.numel() + b.labels.numel());
    if (s >= warmup) real_tokens_timed += real;
  }
  const double tokens_per_second = lanes * real_tokens_timed / span_seconds;

  // FLOPs at the full stated lengths (the upper bound when lengths vary).
  StepFlops flops =
      count_flops(static_cast<int64_t>(batch) * std::max(1, pack), config.num_virtual_tokens,
                  absl::GetFlag(FLAGS_input_length), absl::GetFlag(FLAGS_target_length),
                  stage == "source" ? 0 : decoder_prefix, stage == "distillation");
  // Teacher rows served from the cache during the timed steps.
  const int64_t timed_hits = clock.hits.back() - (warmup > 0 ? clock.hits[warmup - 1] : 0);
  const int64_t timed_misses = clock.misses.back() - (warmup > 0 ? clock.misses[warmup - 1] : 0);
  const double hit_fraction =
      timed_hits + timed_misses > 0 ? double(timed_hits) / (timed_hits + timed_misses) : 0;
  flops.teacher *= 1 - hit_fraction;  // cached rows run no teacher pass
  // ... but the LM head on their hidden states when logits are not kept.
  if (teacher_cache != nullptr && !teacher_cache->keep_logits()) {
    flops.teacher += hit_fraction * batch * std::max(1, pack) * absl::GetFlag(FLAGS_target_length) *
                     2.0 * static_cast<double>(model.hidden_size()) *
                     static_cast<double>(model.vocab_size());
  }
  // Every lane's timed steps over the span they took together.
  const double achieved = lanes * steps * flops.total() / span_seconds;
  double peak_flops = 0;
  // The dtype the step's matrix products ran in.
  const c10::ScalarType product_dtype = ProductDtype(model.dtype(), autocast);
  if (absl::GetFlag(FLAGS_measure_peak) &&
      (model.device().is_cpu() || model.device().is_cuda())) {
    const int64_t d = model.hidden_size(), v = model.vocab_size();
    // The positions of the feed-forward products: the encoder's (prompt +
    // input) for T5, the whole sequence for a decoder-only model.
    const int64_t rows = static_cast<int64_t>(batch) *
                         (config.num_virtual_tokens + absl::GetFlag(FLAGS_input_length) +
                          (causal ? absl::GetFlag(FLAGS_target_length) : 0));
    const int64_t square = model.device().is_cuda() ? 8192 : 1024;
    const std::vector<std::array<int64_t, 3>> shapes = {
        {square, square, square},
        {rows, ff_width, d},
        {static_cast<int64_t>(batch) * absl::GetFlag(FLAGS_target_length), v, d}};
    // Every lane's core at once: the sum of their peaks.
    std::vector<double> lane_peak(lanes, 0);
    for (const absl::Status& s :
         RunInLanes(lanes, lanes, model.device(), [&](size_t l) -> absl::Status {
           ASSIGN_OR_RETURN(lane_peak[l], MeasureMatmulPeak(shapes, model.device(), product_dtype));
           return absl::OkStatus();
         })) {
      RETURN_IF_ERROR(s);
    }
    for (double p : lane_peak) peak_flops += p;
  }
  const double mfu = peak_flops > 0 ? achieved / peak_flops : 0;

  nlohmann::json j = {{"implementation", "mpt"},
                      {"stage", stage},
                      {"model", absl::GetFlag(FLAGS_model)},
                      {"parameters", model.num_parameters()},
                      {"batch_size", batch},
                      {"input_length", absl::GetFlag(FLAGS_input_length)},
                      {"target_length", absl::GetFlag(FLAGS_target_length)},
                      {"length_spread", spread},
                      {"pack", pack},
                      {"lanes", lanes},
                      {"length_bucket_batches", bucket_batches},
                      {"tokens_per_second_per_task", tokens_per_second / std::max(1, pack)},
                      {"tokens_per_cpu_second", real_tokens_timed / cpu_seconds},
                      {"num_virtual_tokens", config.num_virtual_tokens},
                      {"threads", threads.plan.total},
                      {"intra_op_threads", threads.intra_op_threads},
                      {"blas_threads", threads.blas_threads},
                      {"blas_library", threads.blas_library},
                      {"blas", threads.blas_config},
                      {"blas_threading", BlasThreadingName(threads.blas_threading)},
                      {"libtorch_version", threads.libtorch_version},
                      {"cpu_capability", threads.cpu_capability},
                      {"omp_wait_policy", threads.omp_wait_policy},
                      {"heap_allocator", threads.heap_allocator},
                      {"device", model.device().str()},
                      {"autocast", AutocastName(autocast)},
                      {"model_type", kind.model_type},
                      {"family", causal ? "decoder-only" : "encoder-decoder"},
                      {"dtype", c10::toString(model.dtype())},
                      {"peak_dtype", std::string(c10::toString(product_dtype))},
                      {"losses", clock.loss},
                      {"steps", steps},
                      {"step_ms", step_ms},
                      {"cpu_ms_per_step", 1000.0 * cpu_seconds / steps},
                      {"tokens_per_second", tokens_per_second},
                      {"real_token_fraction", real_tokens / positions},
                      {"gflop_per_step", flops.total() / 1e9},
                      {"gflop_forward", flops.forward / 1e9},
                      {"gflop_backward", flops.backward / 1e9},
                      {"gflop_teacher", flops.teacher / 1e9},
                      {"achieved_gflops", achieved / 1e9},
                      {"matmul_peak_gflops", peak_flops / 1e9},
                      {"mfu", mfu},
                      {"teacher_cache_mib", teacher_cache ? teacher_cache->bytes() / 1048576.0 : 0},
                      {"teacher_cache_hit_fraction", hit_fraction},
                      {"teacher_cache_keeps_logits", teacher_cache && teacher_cache->keep_logits()},
                      {"load_seconds", load_seconds},
                      {"rss_after_load_mib", rss_after_load},
                      {"peak_rss_mib", peak}};
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("stage %-13s batch %d x (%d + %d tokens), prompt %d\n", stage.c_str(), batch,
                absl::GetFlag(FLAGS_input_length), absl::GetFlag(FLAGS_target_length),
                config.num_virtual_tokens);
    std::printf("  %s (%s), %.0fM parameters in %s, loaded in %.1f s\n", kind.model_type.c_str(),
                causal ? "decoder-only" : "encoder-decoder", model.num_parameters() / 1e6,
                c10::toString(model.dtype()), load_seconds);
    std::string losses;
    for (double l : clock.loss) absl::StrAppend(&losses, losses.empty() ? "" : " ", l);
    std::printf("  loss per step (warm-up first): %s\n", losses.c_str());
    if (pack > 0) {
      std::printf("  pack of %d source tasks in one pass (%d examples a step)\n", pack,
                  pack * batch);
    }
    if (bucket_batches >= 2) {
      std::printf("  length buckets over windows of %d batches\n", bucket_batches);
    }
    if (lanes > 1) {
      std::printf("  %d lanes side by side, each with one compute thread (libtorch 1, BLAS 1); "
                  "step time per lane, the rest for all lanes\n",
                  lanes);
    } else {
      std::printf("  %s\n", Describe(threads).c_str());
    }
    std::printf("  step %.1f ms (CPU %.1f ms)   %.0f tokens/s (%.0f per CPU-second)   real tokens "
                "%.1f%% of positions\n",
                step_ms, 1000.0 * cpu_seconds / steps, tokens_per_second,
                real_tokens_timed / cpu_seconds, 100.0 * real_tokens / positions);
    std::printf("  model FLOPs %.2f G/step (forward %.2f, input-gradient backward %.2f, teacher %.2f)"
                "   %.1f GFLOP/s\n",
                flops.total() / 1e9, flops.forward / 1e9, flops.backward / 1e9, flops.teacher / 1e9,
                achieved / 1e9);
    if (peak_flops > 0) {
      if (model.device().is_cuda()) {
        std::printf("  %s matmul peak %.1f GFLOP/s (%s, measured)   MFU %.1f%%\n",
                    c10::toString(product_dtype), peak_flops / 1e9, model.device().str().c_str(),
                    100.0 * mfu);
      } else {
        std::printf("  %s matmul peak %.1f GFLOP/s (%s)   MFU %.1f%%\n",
                    c10::toString(product_dtype), peak_flops / 1e9,
                    lanes > 1 ? "in the same lanes at once" : "same threads", 100.0 * mfu);
      }
    }
    if (teacher_cache) {
      std::printf(
          "  teacher outputs: %.0f%% of the timed steps' rows from the cache (%.0f MiB held, %s)\n",
          100.0 * hit_fraction, teacher_cache->bytes() / 1048576.0,
          teacher_cache->keep_logits() ? "logits and hidden states" : "hidden states only");
    }
    std::printf("  peak RSS %.0f MiB (%.0f MiB after loading)\n", peak, rss_after_load);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace mpt

int main(int argc, char** argv) { return mpt::RunFlagsMain(argc, argv, mpt::Main); }
