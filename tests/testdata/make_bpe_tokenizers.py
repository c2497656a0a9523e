#!/usr/bin/env python3
"""Builds small tokenizer folders of the decoder-only families and their golden ids.

Each folder under tests/testdata/tokenizers/<family>/ has the tokenizer.json
(and tokenizer_config.json) layout of one family's real checkpoints, with a
small BPE trained here by the `tokenizers` library on text of this machine
(the Debian word list and licence texts, plus generated lines):

  llama3       Split(Llama 3 regex) + ByteLevel, ignore_merges, BOS template,
               <|begin_of_text|> ... special tokens (PreTrainedTokenizerFast)
  qwen2        Qwen2Tokenizer: NFC, Split(Qwen 2 regex) + ByteLevel, no BOS,
               <|endoftext|>, <|im_start|>, <|im_end|>, non-special added tokens
  gpt2         GPT2Tokenizer: ByteLevel(use_regex), merges as "a b" strings
  llama2       LlamaTokenizer: SentencePiece-style BPE (Prepend/Replace
               normalizer, byte_fallback, <s>/</s>, add_bos_token)
  sp_bpe_fast  the same tokenizer.json read as is (PreTrainedTokenizerFast),
               with add_eos_token too
  metaspace    PreTrainedTokenizerFast with a Metaspace pre-tokenizer,
               no byte fallback (unknown characters: <unk>, fused), added
               tokens with lstrip / rstrip / single_word / normalized
  gemma        GemmaTokenizer: <pad>/<eos>/<bos>/<unk>/<mask> first, spaces
               replaced by ▁ (no prefix one), byte fallback, BOS added
  custom       (its merges differ from run to run: the trainer breaks some
               ties in hash order; tokenizer.json and golden.json are always
               written together) components no family above uses: Replace normalizers (regex
               and string), Split with every behaviour and invert,
               ByteLevel(add_prefix_space), continuing_subword_prefix and
               end_of_word_suffix, unfused <unk>, a BOS + EOS template, a
               Replace / Strip decoder chain, a pad token transformers adds

variants.json holds folders that reuse one of those tokenizer.json files
with other tokenizer_config.json / config.json files (the test writes them
out): how transformers picks the class (config.json's model_type, a
byte-level file under LlamaTokenizer's name), Llama's legacy and
add_prefix_space, GPT-2's add_prefix_space.

golden.json in each folder holds, for several hundred strings, what
transformers' AutoTokenizer gives: input_ids with and without special tokens
and the decoded strings (skipping special tokens or not), plus decodes of
random id lists. Run with a Python that has tokenizers and transformers:

  /tmp/tp-ref/bin/python tests/testdata/make_bpe_tokenizers.py [--only FAMILY...]
"""

import json
import os
import random
import shutil
import sys
import tempfile
import unicodedata

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tokenizers")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def corpus_lines():
    rng = random.Random(7)
    lines = []
    words = []
    if os.path.exists("/usr/share/dict/words"):
        with open("/usr/share/dict/words", encoding="utf-8", errors="replace") as f:
            words = [w.strip() for w in f if w.strip()]
    lic = "/usr/share/common-licenses"
    if os.path.isdir(lic):
        for name in sorted(os.listdir(lic)):
            path = os.path.join(lic, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8", errors="replace") as f:
                    lines.extend(l.rstrip("\n") for l in f)
    rng.shuffle(words)
    for i in range(0, min(len(words), 40000), 8):
        lines.append(" ".join(words[i:i + 8]))
    extra = ["Zürich café naïve résumé façade", "东京 北京 上海 你好 世界 中文 文字",
             "日本語のテキスト こんにちは", "Привет мир, как дела?", "مرحبا بالعالم",
             "I'm sure they've said it's what we'd do, you'll see", "THE END. IT'S DONE!",
             "price: $1,234.56 (about 1234567 units)", "\tindented\n\n  code = x + y;"]
    lines.extend(extra * 30)
    return lines


def byte_level_vocab_merges(pre_tokenizer, normalizer, num_merges):
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=256 + num_merges, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                            for m in model["merges"]]


def sp_vocab_merges(num_merges):
    """A SentencePiece-style BPE: <unk>, <s>, </s>, <0x00>..<0xFF>, then pieces."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=num_merges + 400, min_frequency=2,
                                  limit_alphabet=300, show_progress=False)
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    trained = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for token, _ in trained:
        if token not in vocab:
            vocab[token] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return vocab, merges


def save(tok, family, config, merges_as_strings=False, special_tokens_map=None):
    folder = os.path.join(OUT, family)
    os.makedirs(folder, exist_ok=True)
    doc = json.loads(tok.to_str())
    if merges_as_strings:
        doc["model"]["merges"] = [" ".join(m) for m in doc["model"]["merges"]]
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
    path = os.path.join(folder, "special_tokens_map.json")
    if special_tokens_map is not None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(special_tokens_map, f, ensure_ascii=False, indent=1)
    elif os.path.exists(path):
        os.remove(path)
    return folder


def make_llama3():
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    vocab, merges = byte_level_vocab_merges(pre, None, 1800)
    # Whole words in the vocabulary that the merges do not build: with
    # ignore_merges they are still one token, as in Llama 3's vocabulary.
    for word in ["Ġsupercalifragilistic", "Ġantidisestablishment", "Ġtokenization",
                 "Ġhello", "Ġworld", "ĠHello", "Ġwonderful", "Ġzebra", "456", "Ġcafé"]:
        if word not in vocab:
            vocab[word] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
                "<|python_tag|>"]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", bos)])])
    config = {"bos_token": "<|begin_of_text|>", "clean_up_tokenization_spaces": True,
              "eos_token": "<|end_of_text|>", "model_input_names": ["input_ids", "attention_mask"],
              "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast"}
    return save(tok, "llama3", config)


def make_qwen2():
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    vocab, merges = byte_level_vocab_merges(pre, normalizers.NFC(), 1500)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                              use_regex=False)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]])
    tok.add_tokens([AddedToken(s, special=False, normalized=False)
                    for s in ["<tool_call>", "</tool_call>", "<|fim_prefix|>"]])
    config = {"add_prefix_space": False, "bos_token": None, "chat_template": None,
              "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>",
              "errors": "replace", "model_max_length": 131072, "pad_token": "<|endoftext|>",
              "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
              "unk_token": None}
    return save(tok, "qwen2", config)


def make_gpt2():
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    vocab, merges = byte_level_vocab_merges(pre, None, 1200)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False,
                                              use_regex=True)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    config = {"model_max_length": 1024, "tokenizer_class": "GPT2Tokenizer",
              "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>", "add_prefix_space": False}
    return save(tok, "gpt2", config, merges_as_strings=True)


def sp_tokenizer(vocab, merges, add_bos, add_eos):
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s in ["<unk>", "<s>", "</s>"]])
    single = ("<s> " if add_bos else "") + "$A" + (" </s>" if add_eos else "")
    pair = single + (" <s>:1" if add_bos else "") + " $B:1" + (" </s>:1" if add_eos else "")
    special = ([("<s>", 1)] if add_bos else []) + ([("</s>", 2)] if add_eos else [])
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                       special_tokens=special)
    return tok


def make_llama2(vocab, merges):
    tok = sp_tokenizer(vocab, merges, add_bos=True, add_eos=False)
    config = {"add_bos_token": True, "add_eos_token": False,
              "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False,
                            "normalized": False, "rstrip": False, "single_word": False},
              "clean_up_tokenization_spaces": False,
              "eos_token": {"__type": "AddedToken", "content": "</s>", "lstrip": False,
                            "normalized": False, "rstrip": False, "single_word": False},
              "legacy": False, "model_max_length": 4096, "pad_token": None,
              "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
              "unk_token": {"__type": "AddedToken", "content": "<unk>", "lstrip": False,
                            "normalized": False, "rstrip": False, "single_word": False}}
    return save(tok, "llama2", config, merges_as_strings=True)


def make_gemma(sp_vocab, merges):
    """GemmaTokenizer (Gemma 3's class): <pad>, <eos>, <bos>, <unk>, <mask>
    first, byte fallback, spaces replaced by ▁ without a prefix one."""
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for token in sorted(sp_vocab, key=sp_vocab.get):
        if token not in ("<unk>", "<s>", "</s>") and token not in vocab:
            vocab[token] = len(vocab)
    tok = transformers.GemmaTokenizer(vocab=vocab, merges=list(merges), add_bos_token=True)
    folder = os.path.join(OUT, "gemma")
    os.makedirs(folder, exist_ok=True)
    tok.save_pretrained(folder)
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        path = os.path.join(folder, extra)
        if os.path.exists(path):
            os.remove(path)
    return folder


def make_sp_bpe_fast(vocab, merges):
    # The file's post_processor adds <s> only; tokenizer_config.json's flags
    # rebuild it with </s> as well.
    tok = sp_tokenizer(vocab, merges, add_bos=True, add_eos=False)
    config = {"add_bos_token": True, "add_eos_token": True, "bos_token": "<s>",
              "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>",
              "clean_up_tokenization_spaces": False,
              "tokenizer_class": "PreTrainedTokenizerFast"}
    return save(tok, "sp_bpe_fast", config)


def make_metaspace(vocab, merges):
    # The <0xNN> tokens stay in the vocabulary (ids stay dense) but without
    # byte_fallback they are never produced by Encode.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                 split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s in ["<unk>", "<s>", "</s>"]])
    tok.add_special_tokens([
        AddedToken("[INST]", special=True, normalized=False, lstrip=True, rstrip=True),
        AddedToken("[/INST]", special=True, normalized=False, lstrip=False, rstrip=True)])
    tok.add_tokens([
        AddedToken("<sep>", special=False, normalized=False, single_word=True),
        AddedToken("▁hello▁world", special=False, normalized=True),
        AddedToken("@@", special=False, normalized=False, lstrip=True)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", 1)])
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "clean_up_tokenization_spaces": False,
              "tokenizer_class": "PreTrainedTokenizerFast"}
    # special_tokens_map.json names a different EOS; with no
    # added_tokens_decoder in tokenizer_config.json, transformers takes it.
    stm = {"bos_token": "<s>", "eos_token": "[/INST]", "unk_token": "<unk>", "pad_token": "<unk>"}
    return save(tok, "metaspace", config, special_tokens_map=stm)


def make_custom():
    normalizer = normalizers.Sequence([
        normalizers.NFC(), normalizers.Replace(Regex(r" {3,}"), "  "),
        normalizers.Replace("``", '"')])
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split("|", behavior="removed"),
        pre_tokenizers.Split(Regex(r"\p{N}+"), behavior="merged_with_previous"),
        pre_tokenizers.Split(Regex(r"-"), behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(r"[\p{L}']+|\p{N}+"), behavior="contiguous", invert=True),
        pre_tokenizers.Split(Regex(r"(?<=\p{Ll})(?=\p{Lu})|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
    tok = Tokenizer(models.BPE(unk_token="<unk>", continuing_subword_prefix="##",
                               end_of_word_suffix="</w>"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(vocab_size=1400, min_frequency=2,
                                  continuing_subword_prefix="##", end_of_word_suffix="</w>",
                                  special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok.model = models.BPE(vocab=model["vocab"], merges=merges, unk_token="<unk>",
                           continuing_subword_prefix="##", end_of_word_suffix="</w>",
                           fuse_unk=False)
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace("</w>", " "),
                                     decoders.Replace(Regex(r"#{2}"), ""),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken("<mask>", special=True, normalized=False, lstrip=True)])
    tok.add_tokens([AddedToken("SEPTOKEN", special=False, normalized=True, single_word=True)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
              "clean_up_tokenization_spaces": False,
              "tokenizer_class": "PreTrainedTokenizerFast"}
    return save(tok, "custom", config)


VARIANTS = [
    # config.json's model_type "mistral": transformers reads the file as is
    # although tokenizer_config.json names LlamaTokenizer.
    {"name": "mistral_model_type", "base": "llama2",
     "tokenizer_config": {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>",
                          "eos_token": "</s>", "unk_token": "<unk>", "legacy": False},
     "config": {"model_type": "mistral", "architectures": ["MistralForCausalLM"]}},
    {"name": "llama2_legacy", "base": "llama2",
     "tokenizer_config": {"tokenizer_class": "LlamaTokenizerFast", "legacy": True}},
    {"name": "llama2_no_prefix_space", "base": "llama2",
     "tokenizer_config": {"tokenizer_class": "LlamaTokenizer", "add_prefix_space": False,
                          "pad_token": "<unk>"}},
    # A byte-level tokenizer.json under LlamaTokenizer's name is read as is.
    {"name": "llama3_llama_class", "base": "llama3",
     "tokenizer_config": {"tokenizer_class": "LlamaTokenizerFast",
                          "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
     "config": {"model_type": "llama"}},
    # model_type qwen2: Qwen2Tokenizer whatever tokenizer_class says.
    {"name": "qwen2_model_type", "base": "qwen2",
     "tokenizer_config": {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"},
     "config": {"model_type": "qwen2"}},
    {"name": "gpt2_prefix_space", "base": "gpt2",
     "tokenizer_config": {"tokenizer_class": "GPT2TokenizerFast", "add_prefix_space": True}},
    # Only the class: Llama's defaults for legacy, add_prefix_space and the
    # named tokens.
    {"name": "llama2_class_defaults", "base": "llama2",
     "tokenizer_config": {"tokenizer_class": "LlamaTokenizer"}},
    # split_special_tokens: special tokens in the text are ordinary text.
    {"name": "qwen2_split_special_tokens", "base": "qwen2",
     "tokenizer_config": {"tokenizer_class": "Qwen2Tokenizer", "split_special_tokens": True,
                          "eos_token": "<|im_end|>"}},
    # Tokens only tokenizer_config.json names: added_tokens_decoder entries
    # (one with rstrip, one not special), a pad token, extra special tokens.
    {"name": "llama3_config_tokens", "base": "llama3",
     "tokenizer_config": {
         "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
         "eos_token": "<|eot_id|>", "pad_token": "<|pad|>",
         "added_tokens_decoder": {
             "2065": {"content": "<|begin_of_text|>", "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False, "special": True},
             "5001": {"content": "xyzzy", "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False, "special": False},
             "5000": {"content": "<|new_one|>", "lstrip": False, "normalized": False,
                      "rstrip": True, "single_word": False, "special": True}},
         "extra_special_tokens": ["<|x1|>", "<|eom_id|>"]}},
    # No tokenizer_config.json: the class comes from config.json.
    {"name": "gpt2_model_type_only", "base": "gpt2", "tokenizer_config": None,
     "config": {"model_type": "gpt2"}},
]


def make_variant(variant, folders, tmp):
    folder = os.path.join(tmp, variant["name"])
    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(folders[variant["base"]], "tokenizer.json"), folder)
    for name, key in [("tokenizer_config.json", "tokenizer_config"), ("config.json", "config")]:
        if variant.get(key) is not None:
            with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
                json.dump(variant[key], f)
    return folder


# ---------------------------------------------------------------------------
# Test strings.

FIXED = [
    "", " ", "  ", "\n", "\t", "a", "Hello world", "Hello, world!", " Hello world",
    "Hello world ", "  leading and   trailing  ", "hello\n\nworld", "line1\r\nline2\rline3",
    "tabs\there\t\tand  spaces", "\n\n\n", " \n \n ", "a  b   c    d",
    "I'm sure they've said it's what we'd do, you'll see.", "I'M SURE THEY'VE SAID IT'S",
    "don't won't can't isn't", "'s 't 're 've 'm 'll 'd", "''quoted'' \"double\"",
    "1", "12", "123", "1234", "12345", "1234567890", "3.14159", "1,000,000", "-42", "$1,234.56",
    "2024-01-31T12:34:56Z", "a1b2c3", "x123456y", "٣٤٥ ١٢", "Ⅻ ½ ²",
    "Zürich café naïve résumé", "cafe\u0301 nai\u0308ve", "e\u0301\u0301 A\u030a Å Å",
    "東京 北京 上海 你好 世界", "日本語のテキスト", "한국어 텍스트", "Привет мир", "مرحبا بالعالم",
    "שלום עולם", "ελληνικά γράμματα", "हिन्दी भाषा", "ไทย", "😀 😃 🎉 👍🏽 👨‍👩‍👧",
    "🇫🇷🇩🇪", "emoji😀inside", "a\u200bb\u200dc", "\u00a0nbsp\u00a0", "\u3000ideographic space",
    "\u2028\u2029", "\x0b\x0c", "\x00\x01\x7f", "ſ ﬁ ﬀ", "K Å Ω", "ǅ ǈ",
    "@@@ ### $$$ %%% ^^^ &&& ***", "(parens) [brackets] {braces} <angles>",
    "path/to/file.txt", "https://example.com/a?b=c&d=e#f", "user@example.com",
    "def f(x):\n    return x + 1\n", "if (a && b) { c(); }", "    indented", "trailing\n",
    "supercalifragilistic antidisestablishment tokenization", " hello world wonderful zebra",
    "Hello hello HELLO", "456 4567 45678", "café Café CAFÉ",
    "<|begin_of_text|>", "<|begin_of_text|>Hello", "Hello<|end_of_text|>",
    "a <|eot_id|> b", "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>",
    "<|endoftext|>", "text<|endoftext|>more", "<tool_call>{\"a\": 1}</tool_call>",
    "<|fim_prefix|>def", "a <|new_one|>  b xyzzy <|x1|> c<|pad|>", "xyzzyxyzzy <|new_one|>", "<s>", "</s>", "<unk>", "a<s>b", "a <s> b", "<s> a", "x</s>y",
    "[INST] hi [/INST] there", "a[INST]b", "  [INST]  spaced  [/INST]  ", "<sep>", "a <sep> b",
    "a<sep>b", "hello world", "hello  world", "say hello world now", "x @@ y", "x@@y", "  @@",
    "<|begin_of_text|><|begin_of_text|>", "<|im_start|><|im_end|>", "<s></s><unk>",
    "<|not_a_token|>", "< s >", "<0x41>", "▁", "▁▁", "a▁b", "Ġ", "Ċ", "ĠĠ",
    "The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX",
    "Pack my box with five dozen liquor jugs!", "What's up?! ...", "end.", "...",
    "!!!???", "a-b_c.d", "snake_case_identifier", "CamelCaseIdentifier", "ALLCAPS123",
    "\\escaped\\ \"quotes\"", "tab\tseparated\tvalues\n1\t2\t3", "multi\n\n\nline\n\n",
    "x" * 300, "ab" * 100, " " * 50 + "x", "9" * 40, "é" * 30, "😀" * 10,
    "mixed 中文 and English and 日本語", "ASCII then emoji 🎉 then CJK 東京",
    "\U0001F600\U0001F601\U0001F602", "\U00010348 gothic", "\U0002070E rare CJK",
    "ㄱㄴㄷ", "ᄀ ᅡ ᆨ", "Ꭰ Ꭱ", "𝐀𝐁𝐂 𝟏𝟐𝟑", "①②③", "ｆｕｌｌｗｉｄｔｈ", "１２３",
]

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>",
            "<|endoftext|>", "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<sep>", "<tool_call>",
            "@@"]
PIECES = ["the", "The", "hello", "world", " ", "  ", "\n", "\t", "\r\n", ",", ".", "!", "?",
          "'s", "'ll", "'RE", "n't", "12", "123456", "3.5", "-", "_", "(", ")", "\"", "é",
          "e\u0301", "東京", "日本", "😀", "👍🏽", "مرحبا", "Привет", "ß", "ﬁ", "Ω", "½", "\u00a0",
          "café", "naïve", "zebra", "information", "tokenization", "GPL", "license", "software",
          "☃", "€", "¥", "\u0300", "a", "I", "you", "x=1;", "::", "->", "==", "//", "#"]


def random_strings(rng, n):
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.08:
                parts.append(rng.choice(SPECIALS))
            elif r < 0.15:
                parts.append(chr(rng.choice([rng.randint(0x20, 0x7e), rng.randint(0xa0, 0x2ff),
                                             rng.randint(0x370, 0x6ff), rng.randint(0x4e00, 0x4fff),
                                             rng.randint(0x1f300, 0x1f6ff),
                                             rng.randint(0xac00, 0xacff)])))
            elif r < 0.2:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
            else:
                parts.append(rng.choice(PIECES))
            if rng.random() < 0.5:
                parts.append(" ")
        out.append("".join(parts))
    return out


# Long inputs, kept small on disk: (piece, times, suffix); the golden file
# keeps the id count, a checksum and the ends of the id list.
LONG = [(" ", 50000, "x"), ("a", 60000, ""), ("7", 30001, " "), ("\n", 20000, "end"),
        ("Hello world, ", 5000, "!"), ("\u6771", 20000, ""), ("\U0001F600", 10000, " "),
        (" \t", 20000, "y"), ("'s", 10000, ""), ("-|12 ", 8000, "")]


def long_case(tok, piece, times, suffix):
    text = piece * times + suffix
    ids = tok(text)["input_ids"]
    return {"piece": piece, "times": times, "suffix": suffix, "count": len(ids),
            "checksum": sum((i + 1) * (k % 1000 + 1) for k, i in enumerate(ids)) % 1000000007,
            "head": ids[:16], "tail": ids[-16:]}


def nfc_cases():
    """Text NFC changes: every code point with a canonical decomposition,
    decomposed (with its marks shuffled where canonical ordering must put
    them back), 40 to a string, plus Hangul jamo and reordering cases."""
    chars = [chr(cp) for cp in range(0x300, 0x110000)
             if unicodedata.decomposition(chr(cp)) and not unicodedata.decomposition(chr(cp)).startswith("<")
             and not 0xAC00 <= cp <= 0xD7A3]
    texts = []
    for i in range(0, len(chars), 40):
        texts.append(" ".join(unicodedata.normalize("NFD", c) for c in chars[i:i + 40]))
    texts += ["\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af",
              "a\u0323\u0302 a\u0302\u0323 e\u0301\u0301 \u0338= o\u031b\u0301\u0323",
              "\u0301start A\u030a\u0301 \u212b \u2126 \u0958 \U0001D15E"]
    return texts


def invalid_utf8_cases():
    return [b"abc\xffdef", b"\xc3", b"\xc3(", b"caf\xc3", b"\xe2\x82", b"\xe2\x82x",
            b"\xf0\x9f\x98", b"\xed\xa0\x80 surrogate", b"\xc0\xaf overlong", b"\xf4\x90\x80\x80",
            b"\x80\x80\x80", b"ok \xfe\xfe ok", b"<s>\xff</s>"]


def main():
    only = sys.argv[sys.argv.index("--only") + 1:] if "--only" in sys.argv else None
    random.seed(0)
    sp_vocab, sp_merges = sp_vocab_merges(1600)
    makers = {
        "llama3": make_llama3,
        "qwen2": make_qwen2,
        "gpt2": make_gpt2,
        "llama2": lambda: make_llama2(sp_vocab, sp_merges),
        "sp_bpe_fast": lambda: make_sp_bpe_fast(sp_vocab, sp_merges),
        "metaspace": lambda: make_metaspace(sp_vocab, sp_merges),
        "custom": make_custom,
        "gemma": lambda: make_gemma(sp_vocab, sp_merges),
    }
    folders = {family: make() for family, make in makers.items() if not only or family in only}
    rng = random.Random(1234)
    texts = FIXED + random_strings(rng, 260)
    for family, folder in folders.items():
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        cases = []
        for text in texts:
            cases.append(case(tok, text))
        for raw in invalid_utf8_cases():
            c = case(tok, raw.decode("utf-8", errors="replace"))
            c["bytes_hex"] = raw.hex()
            cases.append(c)
        n = len(tok)
        drng = random.Random(99)
        decodes = []
        special_ids = sorted(set(tok.all_special_ids))
        for _ in range(60):
            ids = [drng.randrange(n) if drng.random() < 0.85 else drng.choice(special_ids)
                   for _ in range(drng.randint(1, 12))]
            decodes.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                            "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
        long_cases = [long_case(tok, *spec) for spec in LONG]
        if family == "qwen2":
            for text in nfc_cases():
                c = case(tok, text)
                c["nfc"] = True
                cases.append(c)
        golden = {
            "family": family,
            "long_cases": long_cases,
            "tokenizer_class": type(tok).__name__,
            "transformers": transformers.__version__,
            "len": n,
            "bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id,
            "pad_id": tok.pad_token_id, "unk_id": tok.unk_token_id,
            "cases": cases,
            "decodes": decodes,
        }
        with open(os.path.join(folder, "golden.json"), "w", encoding="utf-8") as f:
            json.dump(golden, f, ensure_ascii=True, separators=(",", ":"))
        print(family, type(tok).__name__, "len", n, "cases", len(cases))

    if only:
        return  # variants.json reuses every folder
    variants = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            folder = make_variant(variant, folders, tmp)
            tok = transformers.AutoTokenizer.from_pretrained(folder)
            cases = [case(tok, text) for text in FIXED]
            out = dict(variant)
            out.update({"tokenizer_class": type(tok).__name__, "len": len(tok),
                        "bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id,
                        "pad_id": tok.pad_token_id, "unk_id": tok.unk_token_id, "cases": cases})
            variants.append(out)
            print("variant", variant["name"], type(tok).__name__, "cases", len(cases))
    with open(os.path.join(OUT, "variants.json"), "w", encoding="utf-8") as f:
        json.dump({"transformers": transformers.__version__, "variants": variants}, f,
                  ensure_ascii=True, separators=(",", ":"))


def case(tok, text):
    ids = tok(text)["input_ids"]
    plain = tok(text, add_special_tokens=False)["input_ids"]
    return {"text": text, "ids": ids, "ids_plain": plain,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip": tok.decode(ids, skip_special_tokens=True)}


if __name__ == "__main__":
    main()
