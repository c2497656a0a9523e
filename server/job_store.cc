#include "server/job_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/spec/stages.h"
#include "common/status_macros.h"
#include "server/proto_wire.h"

namespace mpt {

void AddInitialProgress(const coordinator::StageRecord& record, mpt::v1::Stage* stage) {
  if (stage->has_progress()) return;
  mpt::v1::Progress* p = stage->mutable_progress();
  p->set_stage(std::string(StageKindName(record.kind())));
  p->set_task(record.task());
  p->set_eta_seconds(-1);
}

namespace {

using coordinator::AssignmentRecord;
using coordinator::JobRecord;
using coordinator::StageRecord;
using coordinator::WorkerRecord;

// `record` as the store writes it: with its initial progress when it has
// none (AddInitialProgress).
std::string StoredStageBytes(const StageRecord& record) {
  if (record.stage().has_progress()) return record.SerializeAsString();
  StageRecord stored = record;
  AddInitialProgress(stored, stored.mutable_stage());
  return stored.SerializeAsString();
}

// Drops a loaded record's progress when it is the initial one and nothing
// else: memory holds none (AddInitialProgress adds it to every view).
void DropInitialProgress(StageRecord* record) {
  if (!record->stage().has_progress()) return;
  const mpt::v1::Progress& p = record->stage().progress();
  // Every field of Progress (a field added to it must be added here).
  const bool initial = p.eta_seconds() == -1 && p.step() == 0 && p.total_steps() == 0 &&
                       p.learning_rate() == 0 && p.tokens_per_second() == 0 && p.losses().empty() &&
                       p.metrics().empty() && p.stage() == StageKindName(record->kind()) &&
                       p.task() == record->task();
  if (initial) record->mutable_stage()->clear_progress();
}

// Migration i takes the schema from version i to version i + 1.
const char* const kMigrations[] = {
    // 0 -> 1
    R"sql(
CREATE TABLE schema_version(version INTEGER NOT NULL);
INSERT INTO schema_version(version) VALUES (0);
CREATE TABLE jobs(
  name TEXT PRIMARY KEY,
  create_seq INTEGER NOT NULL UNIQUE,
  state INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  record BLOB NOT NULL);
CREATE INDEX jobs_by_state ON jobs(state, create_seq);
CREATE INDEX jobs_by_kind ON jobs(kind, create_seq);
CREATE TABLE stages(
  job TEXT NOT NULL,
  stage_id TEXT NOT NULL,
  stage_index INTEGER NOT NULL,
  state INTEGER NOT NULL,
  record BLOB NOT NULL,
  PRIMARY KEY(job, stage_id)) WITHOUT ROWID;
CREATE TABLE assignments(
  id TEXT PRIMARY KEY,
  job TEXT NOT NULL,
  worker TEXT NOT NULL,
  record BLOB NOT NULL);
CREATE TABLE workers(
  name TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  record BLOB NOT NULL);
CREATE TABLE artifacts(
  name TEXT PRIMARY KEY,
  job TEXT NOT NULL,
  stage TEXT NOT NULL,
  kind TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  record BLOB NOT NULL);
CREATE INDEX artifacts_by_job ON artifacts(job);
CREATE TABLE events(
  job TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  event BLOB NOT NULL,
  PRIMARY KEY(job, sequence)) WITHOUT ROWID;
)sql",
    // 1 -> 2
    R"sql(
CREATE TABLE request_ids(
  request_id TEXT PRIMARY KEY,
  job TEXT NOT NULL);
CREATE INDEX artifacts_by_sha256 ON artifacts(sha256);
)sql",
    // 2 -> 3
    R"sql(
ALTER TABLE request_ids ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
)sql",
    // 3 -> 4
    R"sql(
CREATE TABLE log_lines(
  job TEXT NOT NULL,
  line INTEGER NOT NULL,
  stage TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  record BLOB NOT NULL,
  PRIMARY KEY(job, line)) WITHOUT ROWID;
CREATE INDEX log_lines_by_stage ON log_lines(job, stage, line);
CREATE TABLE log_stages(
  job TEXT NOT NULL,
  stage TEXT NOT NULL,
  lines INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  dropped INTEGER NOT NULL,
  PRIMARY KEY(job, stage)) WITHOUT ROWID;
CREATE TABLE log_sources(
  assignment TEXT PRIMARY KEY,
  job TEXT NOT NULL,
  last_sequence INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE log_jobs(
  job TEXT PRIMARY KEY,
  last_line INTEGER NOT NULL) WITHOUT ROWID;
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) ==
                  SqliteJobStore::kCurrentSchemaVersion,
              "one migration per schema version");

// The database file of connection `db`, for messages.
std::string DbFile(sqlite3* db) {
  const char* file = db != nullptr ? sqlite3_db_filename(db, "main") : nullptr;
  if (file != nullptr && *file != '\0') return file;
  return db != nullptr ? "(in memory)" : "(unknown file)";
}

// Every SQLite error becomes a status here, and every such message names
// the database file: "job store FILE: WHAT: SQLite's message", then what
// to do where that is known. `message` replaces SQLite's message of `db`
// when not empty (sqlite3_exec's). DATA_LOSS for a damaged file;
// UNAVAILABLE for what passes or can be fixed while the coordinator runs
// (busy, full disk, I/O error, a file that cannot be written or opened);
// INTERNAL otherwise.
absl::Status SqliteError(sqlite3* db, int rc, absl::string_view what,
                         absl::string_view message = {}) {
  const std::string file = DbFile(db);
  std::string text = absl::StrCat(
      "job store ", file, ": ", what, ": ",
      !message.empty() ? std::string(message)
                       : std::string(db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
  const int primary = rc & 0xff;
  switch (primary) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(absl::StrCat(
          text, ": the database file ", file,
          " is damaged; stop the coordinator, check the file with sqlite3 FILE "
          "'PRAGMA integrity_check', and restore it from a backup"));
    case SQLITE_FULL:
      return absl::UnavailableError(
          absl::StrCat(text, " (free space on the file system that holds ", file, ")"));
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
      return absl::UnavailableError(absl::StrCat(
          text, " (", file, ", its -wal and -shm files beside it, or their folder cannot be "
          "written or opened: check the file system is mounted read-write and the files' "
          "permissions and attributes)"));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
      return absl::UnavailableError(text);
    default:
      return absl::InternalError(text);
  }
}

// A prepared statement, finalised on destruction; or one borrowed from a
// StatementCache, reset (bindings cleared) on destruction instead.
class Statement {
 public:
  Statement(sqlite3* db, absl::string_view sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
  }
  Statement(sqlite3* db, sqlite3_stmt* borrowed, int rc)
      : db_(db), stmt_(borrowed), rc_(rc), borrowed_(true) {}
  ~Statement() {
    if (!borrowed_) {
      sqlite3_finalize(stmt_);
    } else if (stmt_ != nullptr) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  absl::Status status() const {
    return rc_ == SQLITE_OK ? absl::OkStatus() : SqliteError(db_, rc_, "prepare");
  }

  Statement& Bind(int i, absl::string_view text) {
    sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& BindBlob(int i, const std::string& blob) {
    sqlite3_bind_blob(stmt_, i, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Bind(int i, int64_t value) {
    sqlite3_bind_int64(stmt_, i, value);
    return *this;
  }

  // True while there is a row; an error ends iteration and is kept.
  absl::StatusOr<bool> Step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_, rc, "step");
  }
  absl::Status Run() {
    ASSIGN_OR_RETURN(bool row, Step());
    (void)row;
    return absl::OkStatus();
  }
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    return p == nullptr ? std::string()
                        : std::string(reinterpret_cast<const char*>(p),
                                      static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }
  template <typename Message>
  absl::Status Proto(int col, Message* out) {
    const void* p = sqlite3_column_blob(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    if (!out->ParseFromArray(p, n)) {
      return absl::DataLossError(absl::StrCat("job store ", DbFile(db_), ": a stored ",
                                              out->GetTypeName(), " does not parse"));
    }
    return absl::OkStatus();
  }
  // The bytes of column `col` (valid until the next Step()).
  absl::string_view Bytes(int col) {
    const void* p = sqlite3_column_blob(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    return p == nullptr ? absl::string_view()
                        : absl::string_view(static_cast<const char*>(p), static_cast<size_t>(n));
  }
  bool IsNull(int col) { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
  bool borrowed_ = false;
};

// One connection's prepared statements by SQL text, kept for the
// connection's life; used by one thread at a time (whoever holds the
// connection).
class StatementCache {
 public:
  explicit StatementCache(sqlite3* db) : db_(db) {}
  ~StatementCache() {
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  }
  StatementCache(const StatementCache&) = delete;
  StatementCache& operator=(const StatementCache&) = delete;

  // The statement for `sql`, prepared on first use; check status().
  Statement Get(const std::string& sql) {
    auto it = statements_.find(sql);
    if (it != statements_.end()) return Statement(db_, it->second, SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                      SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      return Statement(db_, nullptr, rc);
    }
    statements_.emplace(sql, stmt);
    return Statement(db_, stmt, SQLITE_OK);
  }

 private:
  sqlite3* const db_;
  absl::flat_hash_map<std::string, sqlite3_stmt*> statements_;
};

absl::Status Exec(sqlite3* db, const char* sql) {
  char* error = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &error);
  if (rc != SQLITE_OK) {
    std::string message = error != nullptr ? error : sqlite3_errstr(rc);
    sqlite3_free(error);
    return SqliteError(db, rc, sql, message);
  }
  return absl::OkStatus();
}

absl::StatusOr<sqlite3*> OpenConnection(const std::string& path) {
  sqlite3* db = nullptr;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    // SQLite does not say why; the file system does.
    if ((rc & 0xff) == SQLITE_CANTOPEN) {
      if (access(path.c_str(), F_OK) == 0) {
        if (access(path.c_str(), R_OK | W_OK) != 0) {
          absl::StrAppend(&message, " (the file: ", std::strerror(errno), ")");
        }
      } else {
        const std::string folder = std::filesystem::path(path).parent_path().string();
        if (access(folder.empty() ? "." : folder.c_str(), W_OK | X_OK) != 0) {
          absl::StrAppend(&message, " (cannot create it in ", folder.empty() ? "." : folder,
                          ": ", std::strerror(errno), ")");
        }
      }
    }
    return absl::InternalError(absl::StrCat("job store ", path, ": cannot open: ", message));
  }
  sqlite3_busy_timeout(db, 10000);
  return db;
}

// 0 for a database without the schema_version table.
absl::StatusOr<int> SchemaVersion(sqlite3* db) {
  Statement has_table(db,
                      "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND "
                      "name='schema_version'");
  RETURN_IF_ERROR(has_table.status());
  ASSIGN_OR_RETURN(bool row, has_table.Step());
  if (!row || has_table.Int(0) == 0) {
    Statement any(db, "SELECT COUNT(*) FROM sqlite_master WHERE type='table'");
    RETURN_IF_ERROR(any.status());
    ASSIGN_OR_RETURN(bool any_row, any.Step());
    if (any_row && any.Int(0) > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job store ", DbFile(db),
          ": the database has tables but no schema_version: it was not written by the "
          "coordinator"));
    }
    return 0;
  }
  Statement version(db, "SELECT version FROM schema_version");
  RETURN_IF_ERROR(version.status());
  ASSIGN_OR_RETURN(bool version_row, version.Step());
  if (!version_row) {
    return absl::DataLossError(absl::StrCat("job store ", DbFile(db), ": schema_version is empty"));
  }
  return static_cast<int>(version.Int(0));
}

// Reads run on this many connections at once (WAL lets them run beside the
// writer and each other).
constexpr int kReadConnections = 4;

std::string InList(size_t n) {
  std::vector<std::string> marks(n, "?");
  return absl::StrCat("(", absl::StrJoin(marks, ","), ")");
}

// A page of jobs, newest first: the SELECT of `columns` for `filter` and
// `before_seq`, and its parameters bound in the same order.
std::string JobPageSql(absl::string_view columns, const JobListFilter& filter,
                       int64_t before_seq) {
  std::string sql = absl::StrCat("SELECT ", columns, " FROM jobs WHERE 1");
  if (!filter.states.empty()) {
    absl::StrAppend(&sql, " AND state IN ", InList(filter.states.size()));
  }
  if (!filter.kinds.empty()) absl::StrAppend(&sql, " AND kind IN ", InList(filter.kinds.size()));
  if (before_seq > 0) absl::StrAppend(&sql, " AND create_seq < ?");
  absl::StrAppend(&sql, " ORDER BY create_seq DESC LIMIT ?");
  return sql;
}

void BindJobPage(Statement& st, const JobListFilter& filter, int64_t before_seq,
                 int page_size) {
  int i = 1;
  for (mpt::v1::JobState state : filter.states) st.Bind(i++, int64_t{state});
  for (mpt::v1::JobKind kind : filter.kinds) st.Bind(i++, int64_t{kind});
  if (before_seq > 0) st.Bind(i++, before_seq);
  st.Bind(i++, int64_t{page_size} + 1);  // one more: whether a next page exists
}

}  // namespace

bool StoreWrite::empty() const {
  return jobs.empty() && stages.empty() && assignments.empty() && deleted_assignments.empty() &&
         workers.empty() && deleted_workers.empty() && artifacts.empty() &&
         deleted_artifacts.empty() && events.empty() && request_ids.empty() && logs.empty();
}

// PRAGMA quick_check over every page: DATA_LOSS naming `path` when the
// file is damaged.
absl::Status CheckPages(sqlite3* db, const std::string& path) {
  Statement check(db, "PRAGMA quick_check(1)");
  RETURN_IF_ERROR(check.status());
  ASSIGN_OR_RETURN(bool row, check.Step());
  if (!row || check.Text(0) != "ok") {
    return absl::DataLossError(
        absl::StrCat("job store: ", path, " is damaged (", row ? check.Text(0) : "no answer",
                     "); restore it from a backup, or move it aside to start with an empty store"));
  }
  return absl::OkStatus();
}

class SqliteJobStore::Impl {
 public:
  // `readers` empty: reads share the writing connection (":memory:").
  Impl(sqlite3* writer, std::vector<sqlite3*> readers, int64_t max_log_lines,
       int64_t max_log_bytes, int lock_fd)
      : lock_fd_(lock_fd),
        max_log_lines_(max_log_lines),
        max_log_bytes_(max_log_bytes),
        writer_(writer),
        writer_statements_(std::make_unique<StatementCache>(writer)) {
    for (sqlite3* db : readers) {
      auto r = std::make_unique<Reader>();
      r->db = db;
      r->statements = std::make_unique<StatementCache>(db);
      readers_.push_back(std::move(r));
    }
  }
  ~Impl() {
    if (page_check_.valid()) page_check_.wait();
    for (auto& r : readers_) {
      r->statements.reset();  // finalised before their connection closes
      sqlite3_close(r->db);
    }
    writer_statements_.reset();
    sqlite3_close(writer_);
    if (lock_fd_ >= 0) close(lock_fd_);  // releases the lock
  }

  // Starts the page check on a thread of its own (check_in_background).
  void StartPageCheck(const std::string& path) {
    page_check_ = std::async(std::launch::async, [this, path] {
                    absl::MutexLock lock(&write_mu_);
                    return CheckPages(writer_, path);
                  }).share();
  }

  // The page check's outcome, once it has ended; OK when none runs.
  absl::Status AwaitPageCheck() const {
    if (!page_check_.valid()) return absl::OkStatus();
    std::shared_future<absl::Status> check = page_check_;
    return check.get();
  }

  absl::Status Commit(const std::vector<const StoreWrite*>& writes) {
    RETURN_IF_ERROR(AwaitPageCheck());
    absl::MutexLock lock(&write_mu_);
    RETURN_IF_ERROR(Exec(writer_, "BEGIN IMMEDIATE"));
    absl::Status status;
    for (const StoreWrite* w : writes) {
      status = Apply(*w);
      if (!status.ok()) break;
    }
    if (status.ok()) {
      status = Exec(writer_, "COMMIT");
    }
    if (!status.ok()) {
      // A failed COMMIT may already have rolled back; ignore that error.
      sqlite3_exec(writer_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
    return status;
  }

  // Runs `fn` with the reading connection held.
  template <typename Fn>
  auto Read(Fn fn) {
    return ReadCached([&](sqlite3* db, StatementCache&) { return fn(db); });
  }

  // Runs `fn(db, statements)` with a reading connection and its prepared
  // statements held.
  template <typename Fn>
  auto ReadCached(Fn fn) {
    if (readers_.empty()) {
      absl::MutexLock lock(&write_mu_);
      return fn(writer_, *writer_statements_);
    }
    // Take a free connection if there is one, else wait for one in turn.
    const size_t start = next_reader_.fetch_add(1, std::memory_order_relaxed);
    for (size_t i = 0; i < readers_.size(); ++i) {
      Reader& r = *readers_[(start + i) % readers_.size()];
      if (r.mu.TryLock()) {
        auto result = fn(r.db, *r.statements);
        r.mu.Unlock();
        return result;
      }
    }
    Reader& r = *readers_[start % readers_.size()];
    absl::MutexLock lock(&r.mu);
    return fn(r.db, *r.statements);
  }

 private:
  absl::Status Apply(const StoreWrite& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
    sqlite3* db = writer_;
    if (!w.jobs.empty()) {
      Statement st = writer_statements_->Get(
                   "INSERT OR REPLACE INTO jobs(name, create_seq, state, kind, priority, record) "
                   "VALUES (?, ?, ?, ?, ?, ?)");
      RETURN_IF_ERROR(st.status());
      for (const JobRecord& r : w.jobs) {
        JobRecord stored = r;
        stored.mutable_job()->clear_stages();
        st.Bind(1, r.job().name())
            .Bind(2, r.create_seq())
            .Bind(3, int64_t{r.job().state()})
            .Bind(4, int64_t{r.job().kind()})
            .Bind(5, int64_t{r.job().priority()})
            .BindBlob(6, stored.SerializeAsString());
        RETURN_IF_ERROR(st.Run());
        st.Reset();
      }
    }
    if (!w.stages.empty()) {
      Statement st = writer_statements_->Get(
                   "INSERT OR REPLACE INTO stages(job, stage_id, stage_index, state, record) "
                   "VALUES (?, ?, ?, ?, ?)");
      RETURN_IF_ERROR(st.status());
      for (const auto& [job, r] : w.stages) {
        st.Bind(1, job)
            .Bind(2, r.stage().id())
            .Bind(3, int64_t{r.index()})
            .Bind(4, int64_t{r.stage().state()})
            .BindBlob(5, StoredStageBytes(r));
        RETURN_IF_ERROR(st.Run());
        st.Reset();
      }
    }
    if (!w.assignments.empty()) {
      Statement st = writer_statements_->Get(
                   "INSERT OR REPLACE INTO assignments(id, job, worker, record) "
                   "VALUES (?, ?, ?, ?)");
      RETURN_IF_ERROR(st.status());
      for (const AssignmentRecord& r : w.assignments) {
        st.Bind(1, r.assignment().id())
            .Bind(2, r.assignment().job())
            .Bind(3, r.worker())
            .BindBlob(4, r.SerializeAsString());
        RETURN_IF_ERROR(st.Run());
        st.Reset();
      }
    }
    RETURN_IF_ERROR(DeleteKeys(db, "DELETE FROM assignments WHERE id = ?", w.deleted_assignments));
    if (!w.workers.empty()) {
      Statement st = writer_statements_->Get( "INSERT OR REPLACE INTO workers(name, state, record) VALUES (?, ?, ?)");
      RETURN_IF_ERROR(st.status());
      for (const WorkerRecord& r : w.workers) {
        st.Bind(1, r.worker().name())
            .Bind(2, r.worker().state())
            .BindBlob(3, r.SerializeAsString());
        RETURN_IF_ERROR(st.Run());
        st.Reset();
      }
    }
    RETURN_IF_ERROR(DeleteKeys(db, "DELETE FROM workers WHERE name = ?", w.deleted_workers));
    if (!w.artifacts.empty()) {
      Statement st = writer_statements_->Get(
                   "INSERT OR REPLACE INTO artifacts(name, job, stage, kind, sha256, record) "
                   "VALUES (?, ?, ?, ?, ?, ?)");
      RETURN_IF_ERROR(st.status());
      for (const mpt::v1::Artifact& a : w.artifacts) {
        // "jobs/{job}/artifacts/{id}" -> "jobs/{job}"
        std::string job = a.name().substr(0, a.name().find("/artifacts/"));
        st.Bind(1, a.name())
            .Bind(2, job)
            .Bind(3, a.stage())
            .Bind(4, a.kind())
            .Bind(5, a.sha256())
            .BindBlob(6, a.SerializeAsString());
        RETURN_IF_ERROR(st.Run());
        st.Reset();
      }
    }
    RETURN_IF_ERROR(DeleteKeys(db, "DELETE FROM artifacts WHERE name = ?", w.deleted_artifacts));
    if (!w.events.empty()) {
      Statement st = writer_statements_->Get( "INSERT INTO events(job, sequence, event) VALUES (?, ?, ?)");
      RETURN_IF_ERROR(st.status());
      for (const mpt::v1::JobEvent& e : w.events) {
        st.Bind(1, e.job()).Bind(2, e.sequence()).BindBlob(3, e.SerializeAsString());
        RETURN_IF_ERROR(st.Run());
        st.Reset();
      }
    }
    if (!w.request_ids.empty()) {
      Statement st = writer_statements_->Get(
                   "INSERT INTO request_ids(request_id, job, fingerprint) VALUES (?, ?, ?)");
      RETURN_IF_ERROR(st.status());
      for (const RequestIdRecord& r : w.request_ids) {
        st.Bind(1, r.request_id).Bind(2, r.job).Bind(3, r.fingerprint);
        RETURN_IF_ERROR(st.Run());
        st.Reset();
      }
    }
    for (const StageLogAppend& a : w.logs) RETURN_IF_ERROR(AppendLog(db, a));
    return absl::OkStatus();
  }

  // One StageLogAppend (see job_store.h).
  absl::Status AppendLog(sqlite3* db, const StageLogAppend& a)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
    if (a.lines.empty()) return absl::OkStatus();
    int64_t last_sequence = 0;
    {
      Statement st(db, "SELECT last_sequence FROM log_sources WHERE assignment = ?");
      RETURN_IF_ERROR(st.status());
      st.Bind(1, a.assignment);
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (row) last_sequence = st.Int(0);
    }
    int64_t last_line = 0;
    {
      Statement st(db, "SELECT last_line FROM log_jobs WHERE job = ?");
      RETURN_IF_ERROR(st.status());
      st.Bind(1, a.job);
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (row) last_line = st.Int(0);
    }
    int64_t lines = 0, bytes = 0, dropped = 0;
    {
      Statement st(db, "SELECT lines, bytes, dropped FROM log_stages WHERE job = ? AND stage = ?");
      RETURN_IF_ERROR(st.status());
      st.Bind(1, a.job).Bind(2, a.stage);
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (row) lines = st.Int(0), bytes = st.Int(1), dropped = st.Int(2);
    }
    Statement insert(db,
                     "INSERT INTO log_lines(job, line, stage, bytes, record) VALUES (?, ?, ?, ?, ?)");
    RETURN_IF_ERROR(insert.status());
    auto store = [&](mpt::v1::LogLine line) -> absl::Status {
      line.set_line(++last_line);
      line.set_stage(a.stage);
      const int64_t n = static_cast<int64_t>(line.text().size());
      insert.Bind(1, a.job)
          .Bind(2, line.line())
          .Bind(3, a.stage)
          .Bind(4, n)
          .BindBlob(5, line.SerializeAsString());
      RETURN_IF_ERROR(insert.Run());
      insert.Reset();
      ++lines;
      bytes += n;
      return absl::OkStatus();
    };
    const int64_t sequence_before = last_sequence;
    for (const mpt::v1::LogLine& in : a.lines) {
      if (in.sequence() <= last_sequence) continue;  // stored before
      if (in.sequence() > last_sequence + 1) {
        mpt::v1::LogLine note;
        note.set_assignment(a.assignment);
        *note.mutable_time() = in.time();
        note.set_severity("WARNING");
        const int64_t gap = in.sequence() - last_sequence - 1;
        note.set_text(absl::StrCat("[", gap, gap == 1 ? " log line" : " log lines",
                                   " of this assignment dropped on the worker, whose buffer "
                                   "was full]"));
        RETURN_IF_ERROR(store(std::move(note)));
      }
      mpt::v1::LogLine line = in;
      line.set_assignment(a.assignment);
      RETURN_IF_ERROR(store(std::move(line)));
      last_sequence = in.sequence();
    }
    if (last_sequence == sequence_before) return absl::OkStatus();  // all seen before
    // Oldest lines out until the stage is within the bound.
    if (lines > max_log_lines_ || bytes > max_log_bytes_) {
      Statement oldest(db,
                       "SELECT line, bytes FROM log_lines WHERE job = ? AND stage = ? "
                       "ORDER BY line");
      RETURN_IF_ERROR(oldest.status());
      oldest.Bind(1, a.job).Bind(2, a.stage);
      int64_t cut_through = 0;
      while (lines > max_log_lines_ || bytes > max_log_bytes_) {
        ASSIGN_OR_RETURN(bool row, oldest.Step());
        if (!row) break;
        cut_through = oldest.Int(0);
        bytes -= oldest.Int(1);
        --lines;
        ++dropped;
      }
      Statement cut(db, "DELETE FROM log_lines WHERE job = ? AND stage = ? AND line <= ?");
      RETURN_IF_ERROR(cut.status());
      RETURN_IF_ERROR(cut.Bind(1, a.job).Bind(2, a.stage).Bind(3, cut_through).Run());
    }
    {
      Statement st(db,
                   "INSERT OR REPLACE INTO log_sources(assignment, job, last_sequence) "
                   "VALUES (?, ?, ?)");
      RETURN_IF_ERROR(st.status());
      RETURN_IF_ERROR(st.Bind(1, a.assignment).Bind(2, a.job).Bind(3, last_sequence).Run());
    }
    {
      Statement st(db, "INSERT OR REPLACE INTO log_jobs(job, last_line) VALUES (?, ?)");
      RETURN_IF_ERROR(st.status());
      RETURN_IF_ERROR(st.Bind(1, a.job).Bind(2, last_line).Run());
    }
    Statement st(db,
                 "INSERT OR REPLACE INTO log_stages(job, stage, lines, bytes, dropped) "
                 "VALUES (?, ?, ?, ?, ?)");
    RETURN_IF_ERROR(st.status());
    return st.Bind(1, a.job).Bind(2, a.stage).Bind(3, lines).Bind(4, bytes).Bind(5, dropped).Run();
  }

  static absl::Status DeleteKeys(sqlite3* db, const char* sql,
                                 const std::vector<std::string>& keys) {
    if (keys.empty()) return absl::OkStatus();
    Statement st(db, sql);
    RETURN_IF_ERROR(st.status());
    for (const std::string& key : keys) {
      st.Bind(1, key);
      RETURN_IF_ERROR(st.Run());
      st.Reset();
    }
    return absl::OkStatus();
  }

  // Holds flock(LOCK_EX) on the database file while this store is open; -1
  // for ":memory:".
  const int lock_fd_;
  const int64_t max_log_lines_;
  const int64_t max_log_bytes_;
  absl::Mutex write_mu_;
  sqlite3* const writer_ ABSL_PT_GUARDED_BY(write_mu_);
  std::unique_ptr<StatementCache> writer_statements_ ABSL_PT_GUARDED_BY(write_mu_);
  // Reading connections, each used by one thread at a time.
  struct Reader {
    absl::Mutex mu;
    sqlite3* db ABSL_PT_GUARDED_BY(mu) = nullptr;
    std::unique_ptr<StatementCache> statements ABSL_PT_GUARDED_BY(mu);
  };
  std::vector<std::unique_ptr<Reader>> readers_;
  std::atomic<size_t> next_reader_{0};
  // The page check started by Open() with check_in_background (set before
  // the store is handed out, then only read).
  std::shared_future<absl::Status> page_check_;
};

namespace {

// Appends the stages of `job` (in order) to it.
absl::Status AttachStages(sqlite3* db, mpt::v1::Job* job) {
  Statement st(db, "SELECT record FROM stages WHERE job = ? ORDER BY stage_index");
  RETURN_IF_ERROR(st.status());
  st.Bind(1, job->name());
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    StageRecord r;
    RETURN_IF_ERROR(st.Proto(0, &r));
    *job->add_stages() = r.stage();
  }
  return absl::OkStatus();
}

// AttachStages() for many jobs with one query.
absl::Status AttachStagesOfPage(sqlite3* db, std::vector<mpt::v1::Job>* jobs) {
  if (jobs->empty()) return absl::OkStatus();
  absl::flat_hash_map<std::string, mpt::v1::Job*> by_name;
  for (mpt::v1::Job& job : *jobs) by_name[job.name()] = &job;
  Statement st(db, absl::StrCat("SELECT job, record FROM stages WHERE job IN ",
                                InList(jobs->size()), " ORDER BY job, stage_index"));
  RETURN_IF_ERROR(st.status());
  int i = 1;
  for (const mpt::v1::Job& job : *jobs) st.Bind(i++, job.name());
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    StageRecord r;
    RETURN_IF_ERROR(st.Proto(1, &r));
    auto it = by_name.find(st.Text(0));
    if (it != by_name.end()) *it->second->add_stages() = std::move(*r.mutable_stage());
  }
  return absl::OkStatus();
}

absl::Status Migrate(sqlite3* db, int from, int to) {
  for (int v = from; v < to; ++v) {
    RETURN_IF_ERROR(Exec(db, "BEGIN IMMEDIATE"));
    absl::Status s = Exec(db, kMigrations[v]);
    if (s.ok()) {
      Statement st(db, "UPDATE schema_version SET version = ?");
      s = st.status();
      if (s.ok()) s = st.Bind(1, int64_t{v + 1}).Run();
    }
    if (s.ok()) s = Exec(db, "COMMIT");
    if (!s.ok()) {
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      return absl::Status(s.code(), absl::StrCat("job store: migration from schema version ", v,
                                                 " to ", v + 1, " failed: ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

SqliteJobStore::SqliteJobStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SqliteJobStore::~SqliteJobStore() = default;

absl::StatusOr<int> SqliteJobStore::ReadSchemaVersion(const std::string& path) {
  ASSIGN_OR_RETURN(sqlite3 * db, OpenConnection(path));
  absl::StatusOr<int> version = SchemaVersion(db);
  sqlite3_close(db);
  return version;
}

absl::StatusOr<std::unique_ptr<SqliteJobStore>> SqliteJobStore::Open(
    const std::string& path, SqliteJobStoreOptions options) {
  const int target =
      options.target_schema_version > 0 ? options.target_schema_version : kCurrentSchemaVersion;
  if (options.max_log_lines_per_stage < 1 || options.max_log_bytes_per_stage < 1) {
    return absl::InvalidArgumentError(
        "job store: max_log_lines_per_stage and max_log_bytes_per_stage must be >= 1");
  }
  if (target > kCurrentSchemaVersion) {
    return absl::InvalidArgumentError(absl::StrCat("job store: target schema version ", target,
                                                   " is above ", kCurrentSchemaVersion));
  }
  const bool in_memory = path == ":memory:";
  ASSIGN_OR_RETURN(sqlite3 * writer, OpenConnection(path));
  int lock_fd = -1;
  auto fail = [&](absl::Status s) {
    sqlite3_close(writer);
    if (lock_fd >= 0) close(lock_fd);
    return s;
  };
  if (!in_memory) {
    // SQLite's own locks let two processes share the file, and two
    // coordinators on one store would each plan with a stale view of it
    // (and reuse each other's sequence numbers): one store, one
    // coordinator. The lock goes with the process, kill -9 included.
    lock_fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (lock_fd < 0) {
      return fail(absl::InternalError(
          absl::StrCat("job store: cannot open ", path, ": ", std::strerror(errno))));
    }
    if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      if (error == EWOULDBLOCK) {
        return fail(absl::FailedPreconditionError(absl::StrCat(
            "job store: ", path,
            " is in use by another coordinator (it holds the file's lock); stop that one "
            "first, or give this one another --db")));
      }
      return fail(absl::InternalError(
          absl::StrCat("job store: cannot lock ", path, ": ", std::strerror(error))));
    }
    // SQLite falls back to reading when the file cannot be opened for
    // writing (read-only file system, immutable file, permissions): every
    // write would then fail. Refused now, with the reason.
    if (sqlite3_db_readonly(writer, "main") == 1) {
      int probe = open(path.c_str(), O_RDWR | O_CLOEXEC);
      const std::string reason = probe >= 0 ? "SQLite opened it read-only"
                                            : std::string(std::strerror(errno));
      if (probe >= 0) close(probe);
      return fail(absl::FailedPreconditionError(absl::StrCat(
          "job store ", path, ": cannot be written (", reason,
          "); the coordinator writes every change to it: make the file and its folder "
          "writable, or give it another database")));
    }
  }
  if (!in_memory) {
    Statement wal(writer, "PRAGMA journal_mode=WAL");
    if (!wal.status().ok()) return fail(wal.status());
    absl::StatusOr<bool> row = wal.Step();
    if (!row.ok()) return fail(row.status());
    if (!*row || wal.Text(0) != "wal") {
      return fail(absl::InternalError(
          absl::StrCat("job store: ", path, " cannot use write-ahead logging (journal mode ",
                       *row ? wal.Text(0) : "?", ")")));
    }
  }
  absl::Status s = Exec(writer, options.synchronous_full ? "PRAGMA synchronous=FULL"
                                                         : "PRAGMA synchronous=NORMAL");
  if (!s.ok()) return fail(s);
  if (!in_memory) {
    // Takes the write lock (the -wal and -shm files must be writable too)
    // and writes nothing.
    s = Exec(writer, "BEGIN IMMEDIATE");
    if (s.ok()) s = Exec(writer, "ROLLBACK");
    if (!s.ok()) {
      return fail(absl::Status(s.code(), absl::StrCat(s.message(), "; the coordinator cannot "
                                                                   "write its database")));
    }
  }
  absl::StatusOr<int> version = SchemaVersion(writer);
  if (!version.ok()) return fail(version.status());
  if (*version > kCurrentSchemaVersion) {
    return fail(absl::FailedPreconditionError(absl::StrCat(
        "job store: ", path, " has schema version ", *version,
        ", newer than this coordinator understands (", kCurrentSchemaVersion,
        "); run a newer coordinator or restore a backup")));
  }
  if (*version < target) {
    s = Migrate(writer, *version, target);
    if (!s.ok()) return fail(s);
  }
  // Reads every page once (about 0.2 s of CPU for 100,000 jobs), so that a
  // damaged file stops the start instead of failing calls later.
  const bool check = !in_memory && options.check_on_open;
  if (check && !options.check_in_background) {
    s = CheckPages(writer, path);
    if (!s.ok()) return fail(s);
  }
  std::vector<sqlite3*> readers;
  for (int i = 0; !in_memory && i < kReadConnections; ++i) {
    absl::StatusOr<sqlite3*> r = OpenConnection(path);
    if (!r.ok()) {
      for (sqlite3* db : readers) sqlite3_close(db);
      return fail(r.status());
    }
    // Reads map the database instead of copying its pages through read()
    // (a restart reads every unfinished job's record).
    sqlite3_exec(*r, "PRAGMA mmap_size=1073741824", nullptr, nullptr, nullptr);
    readers.push_back(*r);
  }
  auto impl = std::make_unique<Impl>(writer, std::move(readers), options.max_log_lines_per_stage,
                                     options.max_log_bytes_per_stage, lock_fd);
  if (check && options.check_in_background) impl->StartPageCheck(path);
  return std::unique_ptr<SqliteJobStore>(new SqliteJobStore(std::move(impl)));
}

absl::Status JobStore::CommitBatch(const std::vector<const StoreWrite*>& writes) {
  if (writes.size() == 1) return Commit(*writes[0]);
  StoreWrite all;
  auto append = [](auto& to, const auto& from) { to.insert(to.end(), from.begin(), from.end()); };
  for (const StoreWrite* w : writes) {
    append(all.jobs, w->jobs);
    append(all.stages, w->stages);
    append(all.assignments, w->assignments);
    append(all.deleted_assignments, w->deleted_assignments);
    append(all.workers, w->workers);
    append(all.deleted_workers, w->deleted_workers);
    append(all.artifacts, w->artifacts);
    append(all.deleted_artifacts, w->deleted_artifacts);
    append(all.events, w->events);
    append(all.request_ids, w->request_ids);
    append(all.logs, w->logs);
  }
  return Commit(all);
}

absl::Status SqliteJobStore::CommitBatch(const std::vector<const StoreWrite*>& writes) {
  return impl_->Commit(writes);
}

absl::Status SqliteJobStore::Commit(const StoreWrite& write) {
  if (write.empty()) return absl::OkStatus();
  return impl_->Commit({&write});
}

absl::StatusOr<std::optional<mpt::v1::Job>> SqliteJobStore::ReadJob(const std::string& name) {
  return impl_->ReadCached([&](sqlite3* db, StatementCache& statements) -> absl::StatusOr<std::optional<mpt::v1::Job>> {
    Statement st = statements.Get( "SELECT record FROM jobs WHERE name = ?");
    RETURN_IF_ERROR(st.status());
    st.Bind(1, name);
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return std::optional<mpt::v1::Job>();
    JobRecord r;
    RETURN_IF_ERROR(st.Proto(0, &r));
    mpt::v1::Job job = std::move(*r.mutable_job());
    RETURN_IF_ERROR(AttachStages(db, &job));
    return std::optional<mpt::v1::Job>(std::move(job));
  });
}

absl::StatusOr<JobPage> SqliteJobStore::ListJobs(const JobListFilter& filter, int64_t before_seq,
                                                 int page_size) {
  return impl_->Read([&](sqlite3* db) -> absl::StatusOr<JobPage> {
    Statement st(db, JobPageSql("create_seq, record", filter, before_seq));
    RETURN_IF_ERROR(st.status());
    BindJobPage(st, filter, before_seq, page_size);
    JobPage page;
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      if (static_cast<int>(page.jobs.size()) == page_size) {
        page.more = true;
        break;
      }
      JobRecord r;
      RETURN_IF_ERROR(st.Proto(1, &r));
      page.last_seq = st.Int(0);
      page.jobs.push_back(std::move(*r.mutable_job()));
    }
    RETURN_IF_ERROR(AttachStagesOfPage(db, &page.jobs));
    return page;
  });
}

namespace {

// Job `record` (a stored JobRecord) with `stages` (stored StageRecords) as a
// serialized mpt.v1.Job: the record's `job` bytes, then each stage's
// `stage` bytes as a Job.stages entry.
class SerializedJobBuilder {
 public:
  absl::Status Start(absl::string_view job_record) {
    ASSIGN_OR_RETURN(absl::string_view job, FindLengthDelimitedField(job_record, 1));
    out_.assign(job.data(), job.size());
    return absl::OkStatus();
  }
  absl::Status AddStage(absl::string_view stage_record) {
    ASSIGN_OR_RETURN(absl::string_view stage, FindLengthDelimitedField(stage_record, 1));
    AppendLengthDelimitedField(mpt::v1::Job::kStagesFieldNumber, stage, &out_);
    return absl::OkStatus();
  }
  // Goes on from a job built before.
  void Continue(std::string built) { out_ = std::move(built); }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace

absl::StatusOr<bool> JobStore::HasJob(const std::string& name) {
  ASSIGN_OR_RETURN(std::optional<mpt::v1::Job> job, ReadJob(name));
  return job.has_value();
}

absl::StatusOr<bool> SqliteJobStore::HasJob(const std::string& name) {
  return impl_->ReadCached([&](sqlite3*, StatementCache& statements) -> absl::StatusOr<bool> {
    Statement st = statements.Get("SELECT 1 FROM jobs WHERE name = ?");
    RETURN_IF_ERROR(st.status());
    st.Bind(1, name);
    return st.Step();
  });
}

absl::StatusOr<std::optional<std::string>> JobStore::ReadSerializedJob(const std::string& name) {
  ASSIGN_OR_RETURN(std::optional<mpt::v1::Job> job, ReadJob(name));
  if (!job.has_value()) return std::optional<std::string>();
  return std::optional<std::string>(job->SerializeAsString());
}

absl::StatusOr<SerializedJobPage> JobStore::ListSerializedJobs(
    const JobListFilter& filter, int64_t before_seq, int page_size,
    const SerializedJobLookup& lookup) {
  ASSIGN_OR_RETURN(JobPage page, ListJobs(filter, before_seq, page_size));
  SerializedJobPage out;
  out.last_seq = page.last_seq;
  out.more = page.more;
  for (const mpt::v1::Job& job : page.jobs) {
    std::shared_ptr<const std::string> known = lookup ? lookup(job.name(), job.state()) : nullptr;
    out.jobs.push_back(known != nullptr ? *known : job.SerializeAsString());
  }
  return out;
}

namespace {

// Appends the stages of job `name` to `job` in stage order. The stages come
// by primary key (no sort in SQLite, which would copy every record) and are
// put in order here.
absl::Status AddSerializedStages(StatementCache& statements, const std::string& name,
                                 SerializedJobBuilder* job) {
  Statement st = statements.Get("SELECT stage_index, record FROM stages WHERE job = ?");
  RETURN_IF_ERROR(st.status());
  st.Bind(1, name);
  std::vector<std::pair<int64_t, std::string>> stages;
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    const absl::string_view record = st.Bytes(1);
    stages.emplace_back(st.Int(0), std::string(record.data(), record.size()));
  }
  std::sort(stages.begin(), stages.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [index, record] : stages) RETURN_IF_ERROR(job->AddStage(record));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<std::string>> SqliteJobStore::ReadSerializedJob(
    const std::string& name) {
  return impl_->ReadCached(
      [&](sqlite3*, StatementCache& statements) -> absl::StatusOr<std::optional<std::string>> {
        SerializedJobBuilder job;
        {
          Statement st = statements.Get("SELECT record FROM jobs WHERE name = ?");
          RETURN_IF_ERROR(st.status());
          st.Bind(1, name);
          ASSIGN_OR_RETURN(bool row, st.Step());
          if (!row) return std::optional<std::string>();
          RETURN_IF_ERROR(job.Start(st.Bytes(0)));
        }
        RETURN_IF_ERROR(AddSerializedStages(statements, name, &job));
        return std::optional<std::string>(job.Take());
      });
}

absl::StatusOr<SerializedJobPage> SqliteJobStore::ListSerializedJobs(
    const JobListFilter& filter, int64_t before_seq, int page_size,
    const SerializedJobLookup& lookup) {
  return impl_->ReadCached(
      [&](sqlite3*, StatementCache& statements) -> absl::StatusOr<SerializedJobPage> {
        // The page by the create_seq indexes (one prepared statement per
        // filter shape); each job from `lookup` when it has it in the
        // page's state, else its record and its stages by primary key.
        const std::string sql = JobPageSql("create_seq, name, state, record", filter, before_seq);
        std::vector<std::string> to_read;  // names of the jobs whose stages are read
        std::vector<size_t> to_read_index;
        SerializedJobPage page;
        {
          Statement st = statements.Get(sql);
          RETURN_IF_ERROR(st.status());
          BindJobPage(st, filter, before_seq, page_size);
          while (true) {
            ASSIGN_OR_RETURN(bool row, st.Step());
            if (!row) break;
            if (static_cast<int>(page.jobs.size()) == page_size) {
              page.more = true;
              break;
            }
            page.last_seq = st.Int(0);
            std::string name = st.Text(1);
            std::shared_ptr<const std::string> known =
                lookup ? lookup(name, static_cast<mpt::v1::JobState>(st.Int(2))) : nullptr;
            if (known != nullptr) {
              page.jobs.push_back(*known);
              continue;
            }
            SerializedJobBuilder job;
            RETURN_IF_ERROR(job.Start(st.Bytes(3)));
            to_read.push_back(std::move(name));
            to_read_index.push_back(page.jobs.size());
            page.jobs.push_back(job.Take());
          }
        }
        for (size_t i = 0; i < to_read.size(); ++i) {
          std::string& bytes = page.jobs[to_read_index[i]];
          SerializedJobBuilder job;
          job.Continue(std::move(bytes));
          RETURN_IF_ERROR(AddSerializedStages(statements, to_read[i], &job));
          bytes = job.Take();
        }
        return page;
      });
}

absl::StatusOr<std::vector<mpt::v1::JobEvent>> SqliteJobStore::ReadEvents(const std::string& name,
                                                                          int64_t after_sequence,
                                                                          int limit) {
  return impl_->ReadCached([&](sqlite3* db, StatementCache& statements) -> absl::StatusOr<std::vector<mpt::v1::JobEvent>> {
    Statement st = statements.Get(
                 "SELECT event FROM events WHERE job = ? AND sequence > ? ORDER BY sequence "
                 "LIMIT ?");
    RETURN_IF_ERROR(st.status());
    st.Bind(1, name).Bind(2, after_sequence).Bind(3, int64_t{limit});
    std::vector<mpt::v1::JobEvent> events;
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      mpt::v1::JobEvent e;
      RETURN_IF_ERROR(st.Proto(0, &e));
      events.push_back(std::move(e));
    }
    return events;
  });
}

absl::StatusOr<std::optional<RequestIdRecord>> SqliteJobStore::FindRequestId(
    const std::string& request_id) {
  return impl_->ReadCached([&](sqlite3* db, StatementCache& statements) -> absl::StatusOr<std::optional<RequestIdRecord>> {
    Statement st = statements.Get( "SELECT job, fingerprint FROM request_ids WHERE request_id = ?");
    RETURN_IF_ERROR(st.status());
    st.Bind(1, request_id);
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return std::optional<RequestIdRecord>();
    return std::optional<RequestIdRecord>(RequestIdRecord{request_id, st.Text(0), st.Text(1)});
  });
}

absl::StatusOr<std::optional<mpt::v1::Artifact>> SqliteJobStore::ReadArtifact(
    const std::string& name) {
  return impl_->ReadCached([&](sqlite3* db, StatementCache& statements) -> absl::StatusOr<std::optional<mpt::v1::Artifact>> {
    Statement st = statements.Get( "SELECT record FROM artifacts WHERE name = ?");
    RETURN_IF_ERROR(st.status());
    st.Bind(1, name);
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return std::optional<mpt::v1::Artifact>();
    mpt::v1::Artifact a;
    RETURN_IF_ERROR(st.Proto(0, &a));
    return std::optional<mpt::v1::Artifact>(std::move(a));
  });
}

absl::StatusOr<int64_t> SqliteJobStore::CountArtifactsWithSha256(const std::string& sha256) {
  return impl_->ReadCached([&](sqlite3* db, StatementCache& statements) -> absl::StatusOr<int64_t> {
    Statement st = statements.Get( "SELECT COUNT(*) FROM artifacts WHERE sha256 = ?");
    RETURN_IF_ERROR(st.status());
    st.Bind(1, sha256);
    ASSIGN_OR_RETURN(bool row, st.Step());
    return row ? st.Int(0) : 0;
  });
}

absl::StatusOr<StoreStats> JobStore::ReadStats() {
  return absl::UnimplementedError("this job store keeps no statistics");
}

absl::StatusOr<StoreStats> SqliteJobStore::ReadStats() {
  return impl_->Read([&](sqlite3* db) -> absl::StatusOr<StoreStats> {
    StoreStats stats;
    RETURN_IF_ERROR(Exec(db, "BEGIN"));  // one consistent view of all tables
    auto body = [&]() -> absl::Status {
      for (auto [table, counts] : {std::make_pair("jobs", &stats.jobs_by_state),
                                   std::make_pair("stages", &stats.stages_by_state)}) {
        Statement st(db, absl::StrCat("SELECT state, COUNT(*) FROM ", table, " GROUP BY state"));
        RETURN_IF_ERROR(st.status());
        while (true) {
          ASSIGN_OR_RETURN(bool row, st.Step());
          if (!row) break;
          (*counts)[static_cast<int>(st.Int(0))] = st.Int(1);
        }
      }
      Statement st(db, "SELECT COUNT(*) FROM artifacts");
      RETURN_IF_ERROR(st.status());
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (row) stats.artifacts = st.Int(0);
      return absl::OkStatus();
    };
    absl::Status status = body();
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    if (!status.ok()) return status;
    return stats;
  });
}

namespace {

// Records read at restart, copied end to end into one buffer: a store of
// 100,000 jobs holds 700,000 records, and one allocation per record (then
// freed in one go) had the allocator spend about as long as the parse.
class RecordBuffer {
 public:
  void Add(absl::string_view record) {
    spans_.emplace_back(bytes_.size(), record.size());
    bytes_.append(record.data(), record.size());
  }
  size_t size() const { return spans_.size(); }
  absl::string_view operator[](size_t i) const {
    return absl::string_view(bytes_).substr(spans_[i].first, spans_[i].second);
  }
  void Clear() {
    std::string().swap(bytes_);
    std::vector<std::pair<size_t, size_t>>().swap(spans_);
  }

 private:
  std::string bytes_;
  std::vector<std::pair<size_t, size_t>> spans_;  // (offset, length)
};

// Parses record i of `records` into `*out(i)` on up to `threads` threads
// (the records of a large store take most of a restart to parse).
// DATA_LOSS naming the type when one does not parse.
template <typename Message, typename Out>
absl::Status ParseInto(const RecordBuffer& records, Out out, int threads) {
  const size_t n = records.size();
  threads = std::max(1, std::min<int>(threads, static_cast<int>(n / 1000) + 1));
  std::atomic<bool> failed{false};
  auto part = [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      const absl::string_view r = records[i];
      Message* m = out(i);
      if (!m->ParseFromArray(r.data(), static_cast<int>(r.size()))) failed = true;
    }
  };
  std::vector<std::thread> workers;
  const size_t chunk = (n + threads - 1) / threads;
  for (int t = 1; t < threads; ++t) {
    const size_t begin = std::min(n, t * chunk);
    workers.emplace_back(part, begin, std::min(n, begin + chunk));
  }
  part(0, std::min(n, chunk));
  for (std::thread& w : workers) w.join();
  if (failed) {
    return absl::DataLossError(
        absl::StrCat("job store: a stored ", Message().GetTypeName(), " does not parse"));
  }
  return absl::OkStatus();
}

// Parses every record of `records` into `*out`, in order, on one thread.
template <typename Message>
absl::Status ParseAll(const RecordBuffer& records, std::vector<Message>* out) {
  out->resize(records.size());
  return ParseInto<Message>(
      records, [out](size_t i) { return &(*out)[i]; }, 1);
}

// The stage records of a restart in chunks that each end with a job's last
// stage row: later chunks are read while parser threads parse the earlier
// ones, each record straight into its place in the snapshot.
class StageChunks {
 public:
  struct Chunk {
    RecordBuffer records;
    std::vector<coordinator::StageRecord*> place;  // record i's destination
  };

  // The chunk being filled (reader only).
  Chunk& current() { return *current_; }
  // Hands the current chunk, if it holds records, to the parsers. Every
  // record must have its place (the chunk ends with a whole group).
  void Publish() {
    if (current_->records.size() == 0) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_.push_back(std::move(current_));
    }
    changed_.notify_one();
    current_ = std::make_unique<Chunk>();
  }
  // No chunk follows; parsers return once the ready ones are parsed. The
  // chunk being filled is not handed over: after a failed read its last
  // group has no places yet.
  void Finish() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      finished_ = true;
    }
    changed_.notify_all();
  }
  // Parses chunks as they come until Finish() and none is left.
  void ParseUntilFinished() {
    while (true) {
      std::unique_ptr<Chunk> chunk;
      {
        std::unique_lock<std::mutex> lock(mu_);
        changed_.wait(lock, [this] { return finished_ || !ready_.empty(); });
        if (ready_.empty()) return;
        chunk = std::move(ready_.front());
        ready_.pop_front();
      }
      absl::Status parsed = ParseInto<coordinator::StageRecord>(
          chunk->records, [&](size_t i) { return chunk->place[i]; }, 1);
      // Here, so that the next records of this thread reuse the memory.
      for (size_t i = 0; parsed.ok() && i < chunk->place.size(); ++i) {
        DropInitialProgress(chunk->place[i]);
      }
      if (!parsed.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        if (error_.ok()) error_ = std::move(parsed);
      }
    }
  }
  // The first parse error (DATA_LOSS naming the type); OK when none.
  absl::Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }

 private:
  std::unique_ptr<Chunk> current_ = std::make_unique<Chunk>();
  // A standard mutex rather than absl::Mutex: ThreadSanitizer checks this
  // hand-over only through locks it intercepts, and Debian's Abseil is not
  // built for it.
  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<std::unique_ptr<Chunk>> ready_;  // guarded by mu_
  bool finished_ = false;                     // guarded by mu_
  absl::Status error_;                        // guarded by mu_
};

// Stage rows per chunk: about a megabyte of records.
constexpr size_t kStageChunkRecords = 8192;

}  // namespace

absl::StatusOr<StoreSnapshot> SqliteJobStore::LoadActive() {
  // The rows are read in index order without any ORDER BY (SQLite would
  // copy every record into a sorter) and put in order here. Parser threads
  // take the job records, then the stage records chunk by chunk as they are
  // read, each straight into its job's place in the snapshot.
  RecordBuffer job_records;
  std::vector<int64_t> job_create_seqs;
  std::vector<std::string> job_names;
  std::vector<size_t> job_position_of_row;  // row i's place in create order
  StageChunks stage_chunks;
  RecordBuffer assignment_records;
  RecordBuffer worker_records;
  int64_t max_create_seq = 0;
  std::string largest_job_name;
  StoreSnapshot snap;
  std::vector<std::thread> parsers;
  absl::Status jobs_parsed;
  absl::Status read = impl_->Read([&](sqlite3* db) -> absl::Status {
    RETURN_IF_ERROR(Exec(db, "BEGIN"));  // one consistent view of all tables
    auto body = [&]() -> absl::Status {
      const std::string active = absl::StrCat("(", int{mpt::v1::QUEUED}, ",",
                                              int{mpt::v1::RUNNING}, ",",
                                              int{mpt::v1::CANCELLING}, ")");
      {
        Statement st(
            db, absl::StrCat("SELECT create_seq, name, record FROM jobs WHERE state IN ", active));
        RETURN_IF_ERROR(st.status());
        while (true) {
          ASSIGN_OR_RETURN(bool row, st.Step());
          if (!row) break;
          job_create_seqs.push_back(st.Int(0));
          job_names.push_back(st.Text(1));
          job_records.Add(st.Bytes(2));
        }
      }
      // The jobs in create order.
      std::vector<size_t> order(job_records.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::sort(order.begin(), order.end(),
                [&](size_t a, size_t b) { return job_create_seqs[a] < job_create_seqs[b]; });
      job_position_of_row.resize(order.size());
      for (size_t i = 0; i < order.size(); ++i) job_position_of_row[order[i]] = i;
      snap.jobs.resize(order.size());
      snap.stages.resize(order.size());
      const int threads = static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
      for (int t = 1; t < threads; ++t) {
        parsers.emplace_back([&, first = t == 1] {
          if (first) {
            jobs_parsed = ParseInto<JobRecord>(
                job_records, [&](size_t i) { return &snap.jobs[job_position_of_row[i]]; }, 1);
          }
          stage_chunks.ParseUntilFinished();
        });
      }
      absl::flat_hash_map<absl::string_view, size_t> job_position;
      job_position.reserve(job_names.size());
      for (size_t i = 0; i < job_names.size(); ++i) {
        job_position[job_names[i]] = job_position_of_row[i];
      }
      {
        // Each unfinished job's stages by primary key: grouped by job. A
        // group's records get their places when the group ends, and chunks
        // are cut between groups only.
        Statement st(db, absl::StrCat("SELECT s.job, s.record FROM jobs j CROSS JOIN stages s "
                                      "ON s.job = j.name WHERE j.state IN ",
                                      active));
        RETURN_IF_ERROR(st.status());
        std::string group_job;
        size_t group_begin = 0;
        bool in_group = false;
        auto end_group = [&]() -> absl::Status {
          if (!in_group) return absl::OkStatus();
          in_group = false;
          auto it = job_position.find(group_job);
          if (it == job_position.end() || !snap.stages[it->second].empty()) {
            return absl::DataLossError(absl::StrCat("job store: the stage rows of job \"",
                                                    absl::CHexEscape(group_job),
                                                    "\" do not match its job row"));
          }
          std::vector<coordinator::StageRecord>& stages = snap.stages[it->second];
          StageChunks::Chunk& chunk = stage_chunks.current();
          stages.resize(chunk.records.size() - group_begin);
          for (coordinator::StageRecord& stage : stages) chunk.place.push_back(&stage);
          return absl::OkStatus();
        };
        while (true) {
          ASSIGN_OR_RETURN(bool row, st.Step());
          if (!row) break;
          const absl::string_view job = st.Bytes(0);
          if (!in_group || job != group_job) {
            RETURN_IF_ERROR(end_group());
            if (stage_chunks.current().records.size() >= kStageChunkRecords) {
              stage_chunks.Publish();
            }
            group_job.assign(job.data(), job.size());
            group_begin = stage_chunks.current().records.size();
            in_group = true;
          }
          stage_chunks.current().records.Add(st.Bytes(1));
        }
        RETURN_IF_ERROR(end_group());
        stage_chunks.Publish();
        stage_chunks.Finish();
      }
      for (auto [sql, records] : {std::make_pair("SELECT record FROM assignments ORDER BY id",
                                                 &assignment_records),
                                  std::make_pair("SELECT record FROM workers", &worker_records)}) {
        Statement st(db, sql);
        RETURN_IF_ERROR(st.status());
        while (true) {
          ASSIGN_OR_RETURN(bool row, st.Step());
          if (!row) break;
          records->Add(st.Bytes(0));
        }
      }
      {
        Statement st(db, "SELECT COALESCE(MAX(create_seq), 0) FROM jobs");
        RETURN_IF_ERROR(st.status());
        ASSIGN_OR_RETURN(bool row, st.Step());
        if (row) max_create_seq = st.Int(0);
      }
      {
        Statement st(db, "SELECT COALESCE(MAX(name), '') FROM jobs");
        RETURN_IF_ERROR(st.status());
        ASSIGN_OR_RETURN(bool row, st.Step());
        if (row) largest_job_name = st.Text(0);
      }
      return absl::OkStatus();
    };
    absl::Status s = body();
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    return s;
  });
  // This thread parses what is left beside the others (after a failed
  // read, only chunks already handed over).
  stage_chunks.Finish();
  stage_chunks.ParseUntilFinished();
  for (std::thread& parser : parsers) parser.join();
  // A damaged file explains any other failure of the read.
  RETURN_IF_ERROR(impl_->AwaitPageCheck());
  RETURN_IF_ERROR(read);
  RETURN_IF_ERROR(jobs_parsed);
  RETURN_IF_ERROR(stage_chunks.status());
  job_records.Clear();
  snap.max_create_seq = max_create_seq;
  snap.largest_job_name = std::move(largest_job_name);
  // Each job's stages in stage order (they came by stage id).
  auto by_index = [](const coordinator::StageRecord& a, const coordinator::StageRecord& b) {
    return a.index() < b.index();
  };
  for (std::vector<coordinator::StageRecord>& stages : snap.stages) {
    if (!std::is_sorted(stages.begin(), stages.end(), by_index)) {
      std::sort(stages.begin(), stages.end(), by_index);
    }
  }
  RETURN_IF_ERROR(ParseAll(assignment_records, &snap.assignments));
  RETURN_IF_ERROR(ParseAll(worker_records, &snap.workers));
  std::sort(snap.workers.begin(), snap.workers.end(),
            [](const WorkerRecord& a, const WorkerRecord& b) {
              return a.register_seq() < b.register_seq();
            });
  return snap;
}

absl::StatusOr<StageLogPage> SqliteJobStore::ReadStageLog(const std::string& job,
                                                          const std::string& stage,
                                                          int64_t after_line, int limit) {
  return impl_->Read([&](sqlite3* db) -> absl::StatusOr<StageLogPage> {
    StageLogPage page;
    RETURN_IF_ERROR(Exec(db, "BEGIN"));  // lines and counts from one view
    auto body = [&]() -> absl::Status {
      {
        Statement st(db, stage.empty()
                             ? "SELECT record FROM log_lines WHERE job = ? AND line > ? "
                               "ORDER BY line LIMIT ?"
                             : "SELECT record FROM log_lines WHERE job = ? AND line > ? "
                               "AND stage = ? ORDER BY line LIMIT ?");
        RETURN_IF_ERROR(st.status());
        st.Bind(1, job).Bind(2, after_line);
        if (stage.empty()) {
          st.Bind(3, int64_t{limit} + 1);
        } else {
          st.Bind(3, stage).Bind(4, int64_t{limit} + 1);
        }
        while (true) {
          ASSIGN_OR_RETURN(bool row, st.Step());
          if (!row) break;
          if (static_cast<int>(page.lines.size()) == limit) {
            page.more = true;
            break;
          }
          mpt::v1::LogLine line;
          RETURN_IF_ERROR(st.Proto(0, &line));
          page.lines.push_back(std::move(line));
        }
      }
      {
        Statement st(db, "SELECT last_line FROM log_jobs WHERE job = ?");
        RETURN_IF_ERROR(st.status());
        st.Bind(1, job);
        ASSIGN_OR_RETURN(bool row, st.Step());
        if (row) page.last_line = st.Int(0);
      }
      Statement st(db, stage.empty() ? "SELECT stage, dropped FROM log_stages WHERE job = ? "
                                       "AND dropped > 0"
                                     : "SELECT stage, dropped FROM log_stages WHERE job = ? "
                                       "AND dropped > 0 AND stage = ?");
      RETURN_IF_ERROR(st.status());
      st.Bind(1, job);
      if (!stage.empty()) st.Bind(2, stage);
      while (true) {
        ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        page.dropped[st.Text(0)] = st.Int(1);
      }
      return absl::OkStatus();
    };
    absl::Status s = body();
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    if (!s.ok()) return s;
    return page;
  });
}

}  // namespace mpt
