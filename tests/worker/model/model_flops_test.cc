#include "worker/model/model_flops.h"

#include <gtest/gtest.h>

#include "worker/model/t5_config.h"

namespace mpt {
namespace {

T5Config Tiny() {
  T5Config c;
  c.vocab_size = 10;
  c.d_model = 4;
  c.d_kv = 2;
  c.num_heads = 2;
  c.d_ff = 8;
  c.num_layers = 1;
  c.num_decoder_layers = 1;
  return c;
}

// One encoder and one decoder block, worked by hand: batch 1, 3 encoder
// positions, a decoder prefix of 2 and 1 target position (decoder length 3).
//   encoder weights  3 * 2*3*4*4 (q, k, v) + 2*3*4*4 (o) + 2*3*8*4 + 2*3*4*8 = 768
//   encoder scores and values  2 * 2*(1*2*3)*3*2 = 144
//   The decoder block is the last one, so after its keys and values it runs
//   at the 1 target position only:
//   decoder self-attention  k, v over 3 positions 2 * 2*3*4*4 = 192, q, o
//     over 1: 2 * 2*1*4*4 = 64; scores and values 2 * 2*(1*2*1)*3*2 = 48
//     (the prefix depends on the prompt, so it has a backward)
//   cross-attention and feed-forward  q, o over 1 decoder position 64, k, v
//     over 3 encoder positions 192, feed-forward over 1: 128; scores 48
//   LM head over the 1 target position only: 2*1*10*4 = 80
TEST(CountT5StepFlopsTest, TinyModelByHand) {
  const StepFlops f = CountT5StepFlops(Tiny(), /*batch=*/1, /*encoder_length=*/3,
                                       /*decoder_prefix_length=*/2, /*target_length=*/1);
  EXPECT_DOUBLE_EQ(f.forward, 768 + 144 + (192 + 64) + 48 + (64 + 192 + 128) + 48 + 80);
  // Weight products once more, activation products twice.
  EXPECT_DOUBLE_EQ(f.backward, (768 + 256 + 384 + 80) + 2 * (144 + 48 + 48));
  EXPECT_DOUBLE_EQ(f.teacher, 0);
  const StepFlops with_teacher = CountT5StepFlops(Tiny(), 1, 3, 2, 1, /*with_teacher=*/true);
  EXPECT_DOUBLE_EQ(with_teacher.teacher, with_teacher.forward);
}

// The vocabulary enters through the LM head only, and the LM head runs at
// the target positions: a decoder prefix adds no vocabulary-sized work.
TEST(CountT5StepFlopsTest, LmHeadCountsTargetPositionsOnly) {
  T5Config base;
  base.d_model = 768;
  base.d_kv = 64;
  base.num_heads = 12;
  base.d_ff = 3072;
  base.num_layers = 12;
  base.num_decoder_layers = 12;
  T5Config bigger = base;
  base.vocab_size = 32128;
  bigger.vocab_size = 32128 + 1000;
  for (int64_t prefix : {0, 100}) {
    const StepFlops a = CountT5StepFlops(base, 4, 164, prefix, 16);
    const StepFlops b = CountT5StepFlops(bigger, 4, 164, prefix, 16);
    EXPECT_DOUBLE_EQ(b.forward - a.forward, 2.0 * 4 * 16 * 1000 * 768) << "prefix " << prefix;
    EXPECT_DOUBLE_EQ(b.backward - a.backward, 2.0 * 4 * 16 * 1000 * 768) << "prefix " << prefix;
  }
}

// Without a prefix the first decoder block's self-attention does not depend
// on the prompt: its forward is counted, its backward is not.
TEST(CountT5StepFlopsTest, NoPrefixFirstSelfAttentionHasNoBackward) {
  const StepFlops f = CountT5StepFlops(Tiny(), 1, 3, /*decoder_prefix_length=*/0, 1);
  // Decoder length 1: self-attention weights 4 * 2*1*4*4 = 128, scores
  // 2 * 2*(1*2*1)*1*2 = 16; cross q, o 64, k, v 192, feed-forward 128;
  // cross scores 2 * 2*(1*2*1)*3*2 = 48; LM head 80.
  EXPECT_DOUBLE_EQ(f.forward, 768 + 144 + 128 + 16 + 64 + 192 + 128 + 48 + 80);
  EXPECT_DOUBLE_EQ(f.backward, (768 + 64 + 192 + 128 + 80) + 2 * (144 + 48));
}

}  // namespace
}  // namespace mpt
