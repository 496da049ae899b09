// Writing a checkpoint (trainer/checkpoint.h): save_checkpoint checks and plans the slices, writes
// the rank file, trainer state, config and manifest into step_XXXXXX.tmp/, renames it into place,
// updates `latest` and prunes old steps. Reading one back is checkpoint_load.cc.
#include "trainer/checkpoint.h"

#include <fcntl.h>     // open, O_DIRECTORY
#include <stdio.h>     // renameat2, RENAME_EXCHANGE
#include <sys/stat.h>  // stat
#include <unistd.h>    // write, fsync, close

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <map>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "trainer/checkpoint_internal.h"

namespace strata {

using namespace checkpoint_internal;  // the format's names and helpers shared with checkpoint_load.cc

namespace {

// ---- small file-system helpers ----------------------------------------------------------------

std::string rank_file_name(int rank) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "rank-%05d.safetensors", rank);
  return buf;
}

Status write_all_fd(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return absl::ErrnoToStatus(w < 0 ? errno : EIO, absl::StrCat(path, ": write failed"));
    p += w;
    n -= static_cast<size_t>(w);
  }
  return OkStatus();
}

// Writes `data` to `path` (replacing it), fsyncs and closes.
Status write_file_synced(const std::string& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open for writing"));
  Status s = write_all_fd(fd, data.data(), data.size(), path);
  if (s.ok() && ::fsync(fd) != 0) s = absl::ErrnoToStatus(errno, absl::StrCat(path, ": fsync"));
  if (::close(fd) != 0 && s.ok()) s = absl::ErrnoToStatus(errno, absl::StrCat(path, ": close"));
  return s;
}

// Makes a directory's entries (files created, renamed or removed in it) durable.
Status fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(dir, ": cannot open directory to fsync"));
  Status s;
  if (::fsync(fd) != 0) s = absl::ErrnoToStatus(errno, absl::StrCat(dir, ": fsync of the directory"));
  ::close(fd);
  return s;
}

// ---- save ---------------------------------------------------------------------------------------

// One entry of the save, checked and placed: which tensor, where in it, under which key in the file.
struct PlannedSlice {
  const CheckpointTensor* src = nullptr;
  std::string key;  // name inside the rank file: the tensor name, or "name#k" for its k-th slice
  SliceGeometry geom;
  uint32_t crc = 0;
  uint64_t byte_begin = 0, byte_end = 0;
};

struct PlannedTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  bool replicated = false;
  std::vector<size_t> slices;  // into the planned slices
};

struct SavePlan {
  std::vector<PlannedTensor> tensors;
  std::vector<PlannedSlice> slices;
};

// check_tiles: the tensors must tile every global tensor (a single-rank save); a rank of a
// multi-rank save holds only its part, and the merged manifest is checked instead.
StatusOr<SavePlan> plan_save(const std::vector<CheckpointTensor>& tensors, bool check_tiles = true) {
  SavePlan plan;
  std::map<std::string, size_t> by_name;
  for (const CheckpointTensor& ct : tensors) {
    const std::string what =
        absl::StrCat("save_checkpoint: ", ct.name.empty() ? "(unnamed tensor)" : ct.name);
    if (ct.name.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": empty name"));
    if (ct.tensor == nullptr || !ct.tensor->defined()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": no tensor data"));
    }
    const char* dtype = checkpoint_dtype(ct.tensor->dtype());
    if (dtype == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": dtype ", dtype_name(ct.tensor->dtype()),
                                                     " cannot be checkpointed (f32, bf16, f8e4m3, f8e5m2)"));
    }
    std::vector<int64_t> local;
    for (int d = 0; d < ct.tensor->shape().rank(); ++d) local.push_back(ct.tensor->shape()[d]);

    PlannedSlice ps;
    ps.src = &ct;
    ps.geom.flat = ct.flat_range;
    std::vector<int64_t> global = ct.global_shape.empty() ? local : ct.global_shape;
    if (ct.flat_range) {
      if (!ct.offset.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": a flat range takes flat_begin, not an offset"));
      }
      ps.geom.flat_begin = ct.flat_begin;
      ps.geom.shape = {ct.tensor->numel()};
    } else {
      if (local.size() != global.size()) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": block of shape ", shape_str(local),
                                                       " does not have the rank of the global shape ",
                                                       shape_str(global)));
      }
      ps.geom.offset = ct.offset.empty() ? std::vector<int64_t>(global.size(), 0) : ct.offset;
      ps.geom.shape = local;
    }
    if (std::any_of(global.begin(), global.end(), [](int64_t d) { return d < 0; })) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": global shape ", shape_str(global), " is negative"));
    }
    if (Status s = check_slice_bounds(global, ps.geom); !s.ok()) return annotate(s, what);

    auto [it, inserted] = by_name.emplace(ct.name, plan.tensors.size());
    if (inserted) {
      PlannedTensor pt;
      pt.name = ct.name;
      pt.dtype = dtype;
      pt.shape = global;
      plan.tensors.push_back(std::move(pt));
    }
    PlannedTensor& pt = plan.tensors[it->second];
    if (pt.dtype != dtype || pt.shape != global) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": this slice is ", dtype, " of global shape ",
                                                     shape_str(global), ", an earlier one ", pt.dtype, " of ",
                                                     shape_str(pt.shape)));
    }
    pt.replicated = pt.replicated || ct.replicated;
    pt.slices.push_back(plan.slices.size());
    plan.slices.push_back(std::move(ps));
  }
  for (PlannedTensor& pt : plan.tensors) {
    std::vector<SliceGeometry> geoms;
    for (size_t i : pt.slices) geoms.push_back(plan.slices[i].geom);
    if (Status s = check_tiles ? check_tiling(pt.shape, geoms) : OkStatus(); !s.ok()) {
      return annotate(s, absl::StrCat("save_checkpoint: ", pt.name));
    }
    for (size_t k = 0; k < pt.slices.size(); ++k) {
      plan.slices[pt.slices[k]].key = pt.slices.size() == 1 ? pt.name : absl::StrCat(pt.name, "#", k);
    }
  }
  return plan;
}

// Writes one rank's slices (in the order given) and records each slice's crc32c and byte range,
// and the crc32c of the file's header (everything before the data) in *header_crc.
Status write_rank_file(const std::string& path, int64_t step, int rank, SavePlan* plan,
                       uint32_t* header_crc) {
  SafetensorsWriter w;
  w.set_metadata("format", kFormatName);
  w.set_metadata("step", std::to_string(step));
  w.set_metadata("rank", std::to_string(rank));
  uint64_t data_bytes = 0;
  for (PlannedSlice& s : plan->slices) {
    std::vector<int64_t> file_shape = s.geom.flat ? std::vector<int64_t>{s.geom.numel()} : s.geom.shape;
    w.declare(s.key, checkpoint_dtype(s.src->tensor->dtype()), file_shape);
    s.byte_begin = data_bytes;  // relative to the data buffer until the file size is known
    data_bytes += s.src->tensor->nbytes();
    s.byte_end = data_bytes;
  }
  RETURN_IF_ERROR(w.open(path));
  for (PlannedSlice& s : plan->slices) {
    // One tensor at a time on the host: a device checkpoint never needs a second copy in memory.
    const Tensor& t = *s.src->tensor;
    const Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
    s.crc = crc32c(host.raw(), host.nbytes());
    RETURN_IF_ERROR(w.write(s.key, host.raw(), host.nbytes()));
  }
  RETURN_IF_ERROR(w.close());
  // The tensors tile the data buffer, which ends the file: its start is the file size minus them.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": stat"));
  const uint64_t data_start = static_cast<uint64_t>(st.st_size) - data_bytes;
  for (PlannedSlice& s : plan->slices) {
    s.byte_begin += data_start;
    s.byte_end += data_start;
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot reopen"));
  std::vector<char> buf(std::min<uint64_t>(kReadChunkBytes, data_start));
  Status s = crc_range(fd, path, "header", 0, data_start, &buf, header_crc);
  ::close(fd);
  return s;
}

OJson file_record(const std::string& name, const std::string& contents) {
  return OJson{{"file", name},
               {"bytes", contents.size()},
               {"crc32c", hex32(crc32c(contents.data(), contents.size()))}};
}

// The manifest's record of one rank file's tensors: name -> {dtype, shape, replicated, slices}.
OJson tensor_records(const SavePlan& plan, const std::string& rank_file) {
  OJson tensors = OJson::object();
  for (const PlannedTensor& pt : plan.tensors) {
    OJson t;
    t["dtype"] = pt.dtype;
    t["shape"] = pt.shape;
    if (pt.replicated) t["replicated"] = true;
    OJson slices = OJson::array();
    for (size_t i : pt.slices) {
      const PlannedSlice& s = plan.slices[i];
      OJson js;
      js["file"] = rank_file;
      js["key"] = s.key;
      if (s.geom.flat) {
        js["flat"] = {s.geom.flat_begin, s.geom.numel()};
      } else {
        js["offset"] = s.geom.offset;
        js["shape"] = s.geom.shape;
      }
      js["byte_range"] = {s.byte_begin, s.byte_end};
      js["crc32c"] = hex32(s.crc);
      slices.push_back(std::move(js));
    }
    t["slices"] = std::move(slices);
    tensors[pt.name] = std::move(t);
  }
  return tensors;
}

OJson make_manifest(const CheckpointMeta& meta, const OJson& layout, const OJson& files, const OJson& tensors,
                    const OJson& config_rec, const OJson& state_rec) {
  OJson m;
  m["format"] = kFormatName;
  m["format_version"] = Checkpoint::kFormatVersion;
  m["step"] = meta.step;
  m["layout"] = layout;
  m["config"] = config_rec;
  m["trainer_state"] = state_rec;
  m["files"] = files;
  m["tensors"] = tensors;
  return m;
}

// Adds one rank's tensor records to the merged ones (rank order), checking that ranks agree on
// each tensor's dtype and shape; then every merged tensor must be tiled exactly by its slices.
Status merge_tensor_records(OJson* merged, const OJson& from, int rank) {
  for (const auto& [name, t] : from.items()) {
    if (!merged->contains(name)) {
      (*merged)[name] = t;
      continue;
    }
    OJson& m = (*merged)[name];
    if (m["dtype"] != t["dtype"] || m["shape"] != t["shape"]) {
      return absl::InvalidArgumentError(absl::StrCat("save_checkpoint: ", name, ": rank ", rank, " saves ",
                                                     t["dtype"].dump(), " of shape ", t["shape"].dump(),
                                                     ", an earlier rank ", m["dtype"].dump(), " of ",
                                                     m["shape"].dump()));
    }
    if (t.value("replicated", false)) m["replicated"] = true;
    for (const OJson& slice : t["slices"]) m["slices"].push_back(slice);
  }
  return OkStatus();
}

Status check_merged_tiling(OJson* merged) {
  for (auto& [name, t] : merged->items()) {
    std::vector<SliceGeometry> geoms;
    for (const OJson& js : t["slices"]) {
      SliceGeometry g;
      if (js.contains("flat")) {
        g.flat = true;
        g.flat_begin = js["flat"][0].get<int64_t>();
        g.shape = {js["flat"][1].get<int64_t>()};
      } else {
        g.offset = js["offset"].get<std::vector<int64_t>>();
        g.shape = js["shape"].get<std::vector<int64_t>>();
      }
      geoms.push_back(std::move(g));
    }
    if (Status s = check_tiling(t["shape"].get<std::vector<int64_t>>(), geoms); !s.ok()) {
      return annotate(s, absl::StrCat("save_checkpoint: ", name));
    }
  }
  return OkStatus();
}

// The manifest as text: one line per file, per tensor and per slice (a large model's manifest stays
// greppable), then its own checksum as the last field: the crc32c of every byte before the
// kManifestCrcTail that introduces it.
std::string manifest_text(const OJson& m) {
  std::string out = "{";
  const char* sep = "\n ";
  for (const auto& [key, value] : m.items()) {
    absl::StrAppend(&out, sep, OJson(key).dump(), ": ");
    sep = ",\n ";
    if (key == "files" && value.is_array()) {
      const char* fsep = "\n  ";
      out += "[";
      for (const OJson& f : value) {
        absl::StrAppend(&out, fsep, f.dump());
        fsep = ",\n  ";
      }
      out += "]";
    } else if (key == "tensors" && value.is_object()) {
      const char* tsep = "\n  ";
      out += "{";
      for (const auto& [name, t] : value.items()) {
        OJson head = t;
        head.erase("slices");
        std::string h = head.dump();
        h.pop_back();  // the closing brace: "slices" follows
        absl::StrAppend(&out, tsep, OJson(name).dump(), ": ", h, ",\"slices\": [");
        tsep = ",\n  ";
        const char* ssep = "\n   ";
        for (const OJson& slice : t["slices"]) {
          absl::StrAppend(&out, ssep, slice.dump());
          ssep = ",\n   ";
        }
        out += "]}";
      }
      out += "\n }";
    } else {
      out += value.dump();
    }
  }
  absl::StrAppend(&out, kManifestCrcTail, hex32(crc32c(out.data(), out.size())), "\"\n}\n");
  return out;
}

// Moves the finished tmp directory to its final name; an existing directory of the same step (a
// re-save after resuming) is swapped out atomically with RENAME_EXCHANGE and then deleted.
Status publish_dir(const std::string& tmp, const std::string& final_dir) {
  std::error_code ec;
  if (!fs::exists(final_dir, ec)) {
    if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(tmp, ": cannot rename to ", final_dir));
    }
    return OkStatus();
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0) {
    // No exchange on this file system: move the old one aside first (a brief window without it).
    const std::string aside = final_dir + ".old.tmp";
    fs::remove_all(aside, ec);
    if (::rename(final_dir.c_str(), aside.c_str()) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(final_dir, ": cannot move aside to ", aside));
    }
    if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(tmp, ": cannot rename to ", final_dir));
    }
    fs::remove_all(aside, ec);
    return OkStatus();
  }
  fs::remove_all(tmp, ec);  // now the previous checkpoint of this step
  if (ec) LOG(WARN) << tmp << ": cannot delete the replaced checkpoint: " << ec.message();
  return OkStatus();
}

// Deletes stale step_*.tmp directories and old step directories (see save_checkpoint).
void prune(const std::string& root, int64_t step, int64_t keep_last) {
  std::error_code ec;
  std::vector<std::pair<int64_t, fs::path>> older;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    int64_t s;
    std::error_code ec2;
    if (is_stale_tmp_name(name) && e.is_directory(ec2)) {
      fs::remove_all(e.path(), ec2);
      if (ec2) {
        LOG(WARN) << e.path().string() << ": cannot delete a stale unfinished checkpoint: " << ec2.message();
      }
    } else if (parse_step_dir_name(name, &s) && s < step && e.is_directory(ec2)) {
      older.emplace_back(s, e.path());
    }
  }
  if (ec) LOG(WARN) << root << ": cannot list for pruning: " << ec.message();
  if (keep_last <= 0) return;
  std::sort(older.begin(), older.end());
  const int64_t drop = static_cast<int64_t>(older.size()) - (keep_last - 1);
  for (int64_t i = 0; i < drop; ++i) {
    std::error_code ec2;
    fs::remove_all(older[i].second, ec2);
    if (ec2) LOG(WARN) << older[i].second.string() << ": cannot delete an old checkpoint: " << ec2.message();
  }
}

Status aborted_at(const std::string& stage) {
  return absl::AbortedError(absl::StrCat("save_checkpoint: stopped before ", stage, " (test crash hook)"));
}

// Writes every file of the step into `tmp` (which must not exist yet).
Status write_step_dir(const std::string& tmp, const CheckpointMeta& meta, const OJson& layout, SavePlan* plan,
                      const CheckpointCrashHook& crash_hook) {
  auto crash = [&](const char* stage) { return crash_hook && crash_hook(stage); };
  std::error_code ec;
  if (!fs::create_directory(tmp, ec)) {
    return absl::InternalError(absl::StrCat(tmp, ": cannot create directory: ", ec.message()));
  }
  if (crash("rank_file")) return aborted_at("rank_file");
  const std::string rank_file = rank_file_name(0);
  const std::string rank_path = join_path(tmp, rank_file);
  uint32_t header_crc = 0;
  RETURN_IF_ERROR(write_rank_file(rank_path, meta.step, 0, plan, &header_crc));
  const uint64_t rank_bytes = fs::file_size(rank_path, ec);
  if (ec) return absl::InternalError(absl::StrCat(rank_path, ": cannot stat: ", ec.message()));

  if (crash("trainer_state")) return aborted_at("trainer_state");
  std::string state = "{}\n";
  try {
    if (!meta.trainer_state.is_null()) state = meta.trainer_state.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {  // a string that is not UTF-8
    return absl::InvalidArgumentError(absl::StrCat("save_checkpoint: trainer_state: ", e.what()));
  }
  RETURN_IF_ERROR(write_file_synced(join_path(tmp, kTrainerState), state));
  RETURN_IF_ERROR(write_file_synced(join_path(tmp, kConfig), meta.config_yaml));

  if (crash("manifest")) return aborted_at("manifest");
  const OJson files = OJson::array({OJson{
      {"file", rank_file}, {"rank", 0}, {"bytes", rank_bytes}, {"header_crc32c", hex32(header_crc)}}});
  const OJson manifest = make_manifest(meta, layout, files, tensor_records(*plan, rank_file),
                                       file_record(kConfig, meta.config_yaml), file_record(kTrainerState, state));
  std::string text;
  try {
    text = manifest_text(manifest);
  } catch (const nlohmann::json::exception& e) {  // a layout string that is not UTF-8
    return absl::InvalidArgumentError(absl::StrCat("save_checkpoint: manifest: ", e.what()));
  }
  RETURN_IF_ERROR(write_file_synced(join_path(tmp, kManifest), text));
  return fsync_dir(tmp);
}

// Creates ROOT and an empty ROOT/step_XXXXXX.tmp (deleting one a crashed save left).
Status prepare_step_dir(const std::string& root, const std::string& tmp) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat(root, ": cannot create the checkpoint root: ", ec.message()));
  }
  fs::remove_all(tmp, ec);  // left by a crashed save of this step
  if (ec) {
    return absl::InternalError(absl::StrCat(tmp, ": cannot delete a stale unfinished save: ", ec.message()));
  }
  return OkStatus();
}

// Renames tmp into place, points `latest` at it and prunes old steps.
Status publish_step(const std::string& root, const std::string& tmp, const std::string& name, int64_t step,
                    int64_t keep_last, const CheckpointCrashHook& crash_hook) {
  auto crash = [&](const char* stage) { return crash_hook && crash_hook(stage); };
  const std::string final_dir = join_path(root, name);
  if (crash("rename")) return aborted_at("rename");
  RETURN_IF_ERROR(publish_dir(tmp, final_dir));
  RETURN_IF_ERROR(fsync_dir(root));

  if (crash("latest")) return aborted_at("latest");
  const std::string latest_tmp = join_path(root, std::string(kLatest) + ".tmp");
  RETURN_IF_ERROR(write_file_synced(latest_tmp, name + "\n"));
  if (::rename(latest_tmp.c_str(), join_path(root, kLatest).c_str()) != 0) {
    return absl::ErrnoToStatus(errno,
                               absl::StrCat(latest_tmp, ": cannot rename to ", join_path(root, kLatest)));
  }
  RETURN_IF_ERROR(fsync_dir(root));

  if (crash("prune")) return aborted_at("prune");
  prune(root, step, keep_last);
  return OkStatus();
}

StatusOr<OJson> checked_layout(const CheckpointMeta& meta, int world) {
  if (meta.step < 0) {
    return absl::InvalidArgumentError(absl::StrCat("save_checkpoint: negative step ", meta.step));
  }
  OJson layout = meta.layout.is_null() ? OJson{{"world", 1}, {"dp", 1}, {"pp", 1}, {"ep", 1}}
                                       : OJson::parse(meta.layout.dump());
  if (!layout.is_object()) return absl::InvalidArgumentError("save_checkpoint: layout must be a JSON object");
  if (layout.contains("world") && layout["world"] != world) {
    return absl::InvalidArgumentError(absl::StrCat("save_checkpoint: layout.world = ", layout["world"].dump(),
                                                   ", but ", world, " rank(s) save"));
  }
  return layout;
}

// Every rank learns whether every rank succeeded; a rank that failed returns its own error, the
// others one that points at it.
Status agree(Communicator& comm, const Status& local, const char* stage) {
  double failed = local.ok() ? 0.0 : 1.0;
  RETURN_IF_ERROR(comm.all_reduce(&failed, 1, ReduceOp::kMax));
  if (!local.ok()) return local;
  if (failed > 0.0) {
    return absl::InternalError(
        absl::StrCat("save_checkpoint: another rank failed while ", stage, " (its log names the error)"));
  }
  return OkStatus();
}

// A save by every rank of `comm`: each writes its own rank file into the tmp directory rank 0
// created; rank 0 collects their records, checks that the slices tile every tensor, writes the
// manifest and publishes the step. Every stage ends with an agreement, so all ranks return the
// same success or failure.
Status save_distributed(const std::string& root, const CheckpointMeta& meta,
                        const std::vector<CheckpointTensor>& tensors, int64_t keep_last, Communicator& comm) {
  const int rank = comm.rank(), size = comm.size();
  const std::string name = step_dir_name(meta.step);
  const std::string tmp = join_path(root, name) + ".tmp";
  StatusOr<OJson> layout = checked_layout(meta, size);
  StatusOr<SavePlan> plan = layout.ok() ? plan_save(tensors, /*check_tiles=*/false) : StatusOr<SavePlan>(layout.status());
  Status s = plan.status();
  if (s.ok() && rank == 0) s = prepare_step_dir(root, tmp);
  if (s.ok() && rank == 0) {
    std::error_code ec;
    if (!fs::create_directory(tmp, ec)) s = absl::InternalError(absl::StrCat(tmp, ": cannot create directory: ", ec.message()));
  }
  RETURN_IF_ERROR(agree(comm, s, "preparing the save"));

  const std::string rank_file = rank_file_name(rank);
  const std::string rank_path = join_path(tmp, rank_file);
  uint32_t header_crc = 0;
  s = write_rank_file(rank_path, meta.step, rank, &*plan, &header_crc);
  OJson record;
  if (s.ok()) {
    std::error_code ec;
    const uint64_t bytes = fs::file_size(rank_path, ec);
    if (ec) s = absl::InternalError(absl::StrCat(rank_path, ": cannot stat: ", ec.message()));
    record = OJson{{"file", OJson{{"file", rank_file}, {"rank", rank}, {"bytes", bytes}, {"header_crc32c", hex32(header_crc)}}},
                   {"tensors", tensor_records(*plan, rank_file)}};
  }
  if (Status a = agree(comm, s, "writing its rank file"); !a.ok()) {
    std::error_code ec;
    if (rank == 0) fs::remove_all(tmp, ec);
    return a;
  }

  // Rank 0 gathers the records (length, then text) in rank order. It receives every rank's even
  // after a merge error, so no message is left behind to be matched by a later save.
  const std::string text = record.dump();
  if (rank != 0) {
    const int64_t n = static_cast<int64_t>(text.size());
    RETURN_IF_ERROR(comm.send(&n, sizeof(n), 0, 1));
    RETURN_IF_ERROR(comm.send(text.data(), n, 0, 2));
    return agree(comm, OkStatus(), "publishing");
  }
  OJson files = OJson::array({record["file"]});
  OJson merged = record["tensors"];
  for (int r = 1; r < size; ++r) {
    int64_t n = 0;
    RETURN_IF_ERROR(comm.recv(&n, sizeof(n), r, 1));
    std::string other(static_cast<size_t>(n), '\0');
    RETURN_IF_ERROR(comm.recv(other.data(), n, r, 2));
    if (!s.ok()) continue;
    const OJson rec = OJson::parse(other);
    files.push_back(rec["file"]);
    s = merge_tensor_records(&merged, rec["tensors"], r);
  }
  if (s.ok()) s = check_merged_tiling(&merged);
  if (s.ok()) {
    std::string state = "{}\n";
    if (!meta.trainer_state.is_null()) state = meta.trainer_state.dump(2) + "\n";
    s = write_file_synced(join_path(tmp, kTrainerState), state);
    if (s.ok()) s = write_file_synced(join_path(tmp, kConfig), meta.config_yaml);
    if (s.ok()) {
      const OJson manifest = make_manifest(meta, *layout, files, merged, file_record(kConfig, meta.config_yaml),
                                           file_record(kTrainerState, state));
      s = write_file_synced(join_path(tmp, kManifest), manifest_text(manifest));
    }
    if (s.ok()) s = fsync_dir(tmp);
    if (s.ok()) s = publish_step(root, tmp, name, meta.step, keep_last, nullptr);
  }
  if (!s.ok()) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
  }
  return agree(comm, s, "publishing");
}

}  // namespace

Status save_checkpoint(const std::string& root, const CheckpointMeta& meta,
                       const std::vector<CheckpointTensor>& tensors, int64_t keep_last,
                       const CheckpointCrashHook& crash_hook, Communicator* comm) {
  if (comm != nullptr && comm->size() > 1) return save_distributed(root, meta, tensors, keep_last, *comm);
  ASSIGN_OR_RETURN(const OJson layout, checked_layout(meta, 1));
  ASSIGN_OR_RETURN(SavePlan plan, plan_save(tensors));
  const std::string name = step_dir_name(meta.step);
  const std::string tmp = join_path(root, name) + ".tmp";
  RETURN_IF_ERROR(prepare_step_dir(root, tmp));
  if (Status s = write_step_dir(tmp, meta, layout, &plan, crash_hook); !s.ok()) {
    std::error_code ec;
    if (!absl::IsAborted(s)) fs::remove_all(tmp, ec);  // a simulated crash leaves its debris
    return s;
  }
  return publish_step(root, tmp, name, meta.step, keep_last, crash_hook);
}

}  // namespace strata
