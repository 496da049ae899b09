#include "trainer/hf_export.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/dtype.h"
#include "core/safetensors.h"
#include "data/tokenizer.h"
#include "data/unicode_text.h"
#include "model/hf.h"
#include "trainer/checkpoint.h"
#include "trainer/config_yaml.h"
#include "trainer/plan.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// One tensor of the export: elements [begin, begin + count) of checkpoint tensor `source`.
struct ExportTensor {
  std::string name;            // transformers' name
  std::string source;          // Strata's parameter name
  int64_t begin = 0, count = 0;
  std::vector<int64_t> shape;  // as written
};

Status write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path.string(), ": cannot write"));
  return OkStatus();
}

// The fault a test asks for: STRATA_EXPORT_FAULT=shard:N fails writing shard N (1-based) after its
// first tensor, as a full disk would.
int64_t injected_fault_shard() {
  const char* v = std::getenv("STRATA_EXPORT_FAULT");
  if (v == nullptr) return 0;
  int64_t n = 0;
  return std::sscanf(v, "shard:%ld", &n) == 1 ? n : 0;
}

// Every tensor transformers expects, in Strata's parameter order, experts unstacked.
StatusOr<std::vector<ExportTensor>> export_tensors(const ModelConfig& model, const Checkpoint& ckpt) {
  std::vector<ExportTensor> out;
  for (const PlannedParam& p : plan_parameters(model)) {
    if (!ckpt.has_tensor(p.name)) {
      return absl::NotFoundError(absl::StrCat(ckpt.dir(), ": no tensor ", p.name, " (a checkpoint of another model?)"));
    }
    const std::vector<int64_t> shape = ckpt.global_shape(p.name);
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    if (numel != p.numel) {
      return absl::InvalidArgumentError(absl::StrCat(ckpt.dir(), ": tensor ", p.name, " has ", numel,
                                                     " elements; the checkpoint's config gives ", p.numel));
    }
    const std::vector<std::string> names = hf_tensor_names(model, p.name);
    if (names.empty()) return absl::InternalError(absl::StrCat("no Hugging Face name for ", p.name));
    if (names.size() == 1) {
      out.push_back({names[0], p.name, 0, numel, shape});
      continue;
    }
    // Stacked experts (E, rows, cols): one tensor per expert.
    const std::vector<int64_t> per_shape(shape.begin() + 1, shape.end());
    const int64_t per = numel / static_cast<int64_t>(names.size());
    for (size_t e = 0; e < names.size(); ++e) out.push_back({names[e], p.name, static_cast<int64_t>(e) * per, per, per_shape});
  }
  return out;
}

Status write_tokenizer(const std::string& spec, int64_t max_len, const fs::path& dir) {
  if (spec == "char") {
    RETURN_IF_ERROR(write_text(dir / "tokenizer.json", char_tokenizer_json()));
    return write_text(dir / "tokenizer_config.json", char_tokenizer_config_json(max_len));
  }
  const fs::path src(spec);
  std::error_code ec;
  fs::copy_file(src, dir / "tokenizer.json", ec);
  if (ec) return absl::NotFoundError(absl::StrCat(spec, ": cannot copy the run's tokenizer: ", ec.message()));
  for (const char* extra : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const fs::path side = src.parent_path() / extra;
    if (fs::exists(side)) fs::copy_file(side, dir / extra, ec);
    if (ec) return absl::DataLossError(absl::StrCat(side.string(), ": cannot copy: ", ec.message()));
  }
  return OkStatus();
}

StatusOr<ExportResult> write_export(const Checkpoint& ckpt, const ExperimentConfig& config, const ExportOptions& o,
                                    const fs::path& dir) {
  ExportResult result;
  const ModelConfig& model = config.model;
  auto tok = load_tokenizer(config.data.tokenizer);
  const int64_t eos = tok.ok() ? (*tok)->eos_id() : -1;
  const std::string dtype = o.bf16 ? "bfloat16" : "float32";
  ASSIGN_OR_RETURN(const std::string config_json, model_config_to_hf_json(model, dtype, -1, eos));
  RETURN_IF_ERROR(write_text(dir / "config.json", config_json + "\n"));
  json gen = {{"_from_model_config", true}, {"transformers_version", "5.23.0"}};
  if (eos >= 0) gen["eos_token_id"] = eos;
  if (tok.ok()) gen["pad_token_id"] = (*tok)->pad_id();
  RETURN_IF_ERROR(write_text(dir / "generation_config.json", gen.dump(2) + "\n"));
  if (tok.ok()) {
    RETURN_IF_ERROR(write_tokenizer(config.data.tokenizer, model.max_seq_len, dir));
  } else {
    std::fprintf(stderr, "export: no tokenizer written (%s)\n", std::string(tok.status().message()).c_str());
  }

  // Shards: tensors in order, a new shard once the next tensor would pass max_shard_bytes.
  ASSIGN_OR_RETURN(const std::vector<ExportTensor> tensors, export_tensors(model, ckpt));
  const int64_t esize = o.bf16 ? 2 : 4;
  std::vector<std::vector<size_t>> shards(1);
  int64_t in_shard = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t bytes = tensors[i].count * esize;
    if (!shards.back().empty() && in_shard + bytes > o.max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(i);
    in_shard += bytes;
    result.bytes += bytes;
    result.largest_tensor_bytes = std::max(result.largest_tensor_bytes, tensors[i].count * 4);
  }
  const int64_t fault = injected_fault_shard();
  json weight_map = json::object();
  std::vector<float> values;
  std::vector<uint16_t> halves;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards.size());
    SafetensorsWriter w;
    for (size_t i : shards[s]) w.declare(tensors[i].name, o.bf16 ? "BF16" : "F32", tensors[i].shape);
    w.set_metadata("format", "pt");
    RETURN_IF_ERROR(w.open((dir / file).string()));
    for (size_t k = 0; k < shards[s].size(); ++k) {
      const ExportTensor& t = tensors[shards[s][k]];
      if (fault == static_cast<int64_t>(s) + 1 && k == 1) {
        return absl::DataLossError(absl::StrCat((dir / file).string(), ": ", t.name,
                                                ": write failed (injected by STRATA_EXPORT_FAULT)"));
      }
      values.resize(static_cast<size_t>(t.count));
      RETURN_IF_ERROR(ckpt.read_flat(t.source, t.begin, t.count, values.data()));
      int64_t held = t.count * 4;
      if (o.bf16) {
        halves.resize(values.size());
        f32_to_bf16_n(values.data(), halves.data(), values.size());
        held += t.count * 2;
        RETURN_IF_ERROR(w.write(t.name, halves.data(), halves.size() * sizeof(uint16_t)));
      } else {
        RETURN_IF_ERROR(w.write(t.name, values.data(), values.size() * sizeof(float)));
      }
      result.buffer_peak_bytes = std::max(result.buffer_peak_bytes, held);
      // Let go of a large tensor's buffers before the next (one tensor held at a time).
      std::vector<float>().swap(values);
      std::vector<uint16_t>().swap(halves);
      weight_map[t.name] = file;
      ++result.tensors;
    }
    RETURN_IF_ERROR(w.close());
    if (o.progress) {
      std::fprintf(stderr, "export: %s (%zu tensors) written\n", file.c_str(), shards[s].size());
    }
  }
  result.shards = static_cast<int64_t>(shards.size());
  json index = {{"metadata", {{"total_size", result.bytes}}}, {"weight_map", weight_map}};
  RETURN_IF_ERROR(write_text(dir / "model.safetensors.index.json", index.dump(2) + "\n"));
  return result;
}

}  // namespace

StatusOr<ExportResult> export_hf(const std::string& checkpoint, const ExportOptions& o) {
  std::string target = checkpoint;
  if (fs::exists(fs::path(checkpoint) / "checkpoints" / "latest")) target = (fs::path(checkpoint) / "checkpoints").string();
  ASSIGN_OR_RETURN(const std::string step_dir, resolve_checkpoint(target));
  ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::open(step_dir));
  ASSIGN_OR_RETURN(const ExperimentConfig config,
                   parse_experiment_config(ckpt.meta().config_yaml, step_dir + "/manifest.json (config)"));

  const fs::path out(o.out);
  if (fs::exists(out) && !o.force) {
    return absl::AlreadyExistsError(absl::StrCat(o.out, ": exists; pass --force to replace it"));
  }
  const fs::path tmp = fs::path(out.string() + absl::StrCat(".tmp-", getpid()));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(tmp.string(), ": cannot create: ", ec.message()));
  StatusOr<ExportResult> r = write_export(ckpt, config, o, tmp);
  if (r.ok() && fs::exists(out)) {
    fs::remove_all(out, ec);
    if (ec) r = absl::PermissionDeniedError(absl::StrCat(o.out, ": cannot replace: ", ec.message()));
  }
  if (r.ok()) {
    fs::rename(tmp, out, ec);
    if (ec) r = absl::PermissionDeniedError(absl::StrCat(tmp.string(), " -> ", o.out, ": cannot rename: ", ec.message()));
  }
  if (!r.ok()) {
    fs::remove_all(tmp, ec);  // nothing partial stays behind
    return annotate(r.status(), absl::StrCat("export of ", step_dir, " to ", o.out, " failed; nothing was written"));
  }
  return r;
}

// GPT-2's byte-level alphabet character of an ASCII byte (data/unicode_text.h).
std::string byte_level_char(int b) { return byte_level_encode(std::string(1, static_cast<char>(b))); }

std::string char_tokenizer_json() {
  // A byte-level BPE without merges: every ASCII byte is its own token, id = its code. Any
  // transformers tokenizer class that rebuilds a byte-level BPE from vocab + merges (Qwen2's
  // does) gets the same ids.
  json vocab = json::object();
  for (int i = 0; i < 128; ++i) vocab[byte_level_char(i)] = i;
  auto special = [](int id) {
    return json{{"id", id},         {"content", byte_level_char(id)},
                {"single_word", false}, {"lstrip", false},
                {"rstrip", false},  {"normalized", false},
                {"special", true}};
  };
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", true}};
  json j = {{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", {special(0), special(4)}},
            {"normalizer", nullptr},
            {"pre_tokenizer", byte_level},
            {"post_processor", nullptr},
            {"decoder", byte_level},
            {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                       {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                       {"ignore_merges", false}, {"vocab", vocab}, {"merges", json::array()}}}};
  return j.dump(2) + "\n";
}

std::string char_tokenizer_config_json(int64_t model_max_length) {
  json j = {{"tokenizer_class", "PreTrainedTokenizerFast"},
            {"eos_token", byte_level_char(4)},
            {"pad_token", byte_level_char(0)},
            {"model_max_length", model_max_length},
            {"clean_up_tokenization_spaces", false}};
  return j.dump(2) + "\n";
}

}  // namespace strata
