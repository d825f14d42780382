// st_db_budget.cc — memtables charged to the block cache, and WAL files preallocated with their
// size; see st_db_budget.h. RocksDB's C API (rocksdb/c.h, 7.8) cannot set
// Options::write_buffer_manager, nor an Env over a file system of our own, so this file reaches
// the C++ objects behind the C handles. c.h declares the handles as incomplete structs;
// db/c.cc of RocksDB v7.8.3 (the version Debian bookworm installs, librocksdb-dev 7.8.3) defines
// the two used here as
//     struct rocksdb_options_t { Options rep; };
//     struct rocksdb_cache_t { std::shared_ptr<Cache> rep; };
// and they are mirrored below, exactly. The mirror is only right for a library whose c.cc says
// the same: the build stops on any other RocksDB version (static_assert below) until someone has
// read that version's c.cc, and st_db_budget_attach compares a value set through the C API with
// the same value read through the mirror before it changes anything (st_db_open calls
// st_db_wal_presize only after that check passed).
#include "st_db_budget.h"

#include <rocksdb/cache.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/options.h>
#include <rocksdb/version.h>
#include <rocksdb/write_buffer_manager.h>

#include <algorithm>
#include <memory>
#include <new>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static_assert(ROCKSDB_MAJOR == 7 && ROCKSDB_MINOR == 8,
              "store/st_db_budget.cc mirrors rocksdb_options_t and rocksdb_cache_t of RocksDB 7.8's db/c.cc; "
              "check that this RocksDB's db/c.cc defines them the same way, then widen this check");

struct rocksdb_options_t {
    rocksdb::Options rep;
};
struct rocksdb_cache_t {
    std::shared_ptr<rocksdb::Cache> rep;
};

extern "C" sg_rc st_db_budget_attach(rocksdb_options_t *opts, rocksdb_cache_t *cache, size_t memtable_bytes)
{
    if (opts == nullptr || cache == nullptr || cache->rep == nullptr || memtable_bytes == 0)
        return SG_E_INVALID;
    // A probe of both layouts through the library's own accessors: a mismatch shows here
    // instead of as a write into the wrong field.
    size_t was = rocksdb_options_get_db_write_buffer_size(opts);
    rocksdb_options_set_db_write_buffer_size(opts, memtable_bytes);
    bool same = opts->rep.db_write_buffer_size == memtable_bytes &&
                cache->rep->GetCapacity() == rocksdb_cache_get_capacity(cache);
    if (!same) {
        rocksdb_options_set_db_write_buffer_size(opts, was);
        return SG_E_INVALID;
    }
    // With a write buffer manager RocksDB ignores db_write_buffer_size; it is left at the same
    // figure so both say what the limit is. allow_stall stays off: RocksDB's own write stalls
    // (too many memtables or level-0 files) still apply, and a shard's writer is not held on
    // memory that a flush is about to return.
    try {
        opts->rep.write_buffer_manager = std::make_shared<rocksdb::WriteBufferManager>(memtable_bytes, cache->rep);
    } catch (const std::bad_alloc &) {
        return SG_E_NOMEM;
    }
    return SG_OK;
}

extern "C" uint64_t st_db_budget_charged(const rocksdb_options_t *opts)
{
    const auto &wbm = opts->rep.write_buffer_manager;
    return wbm && wbm->cost_to_cache() ? wbm->dummy_entries_in_cache_usage() : 0;
}

extern "C" uint64_t st_db_budget_memtable_limit(const rocksdb_options_t *opts)
{
    const auto &wbm = opts->rep.write_buffer_manager;
    return wbm ? wbm->buffer_size() : 0;
}

namespace {

// The default file system, except that a WAL file's preallocation sets its size
// (fallocate_with_keep_size off; RocksDB's env.h: "This option will improve the performance in
// workloads where you sync the data on every write"). With the size kept, as RocksDB's posix file
// system asks for WAL files, every fsync of an append also writes the inode for the new size:
// on this machine's ext4 an fdatasync after a 1.6 KB append takes 145 us with the size kept and
// 101 us with it set (p50 of 6,000, bench/fsync.py). A file closed normally is trimmed to what
// was written (PosixWritableFile::Close); after a crash its tail reads as zeros, which WAL
// recovery skips as padding (log::Reader, the same as the tail of a file written through mmap).
//
// And its blocks are written (with zeros) a little ahead of the appends. fallocate leaves the
// blocks "unwritten": the first fdatasync over each one also converts it, an ext4 journal commit
// with a kworker's and jbd2's wake-ups on the way. Over blocks written before, an fdatasync only
// writes the data and flushes the device's cache, as RocksDB's recycled WAL files would have it
// (recycle_log_file_num, which the point-in-time recovery the shards use does not allow). On this
// machine's ext4 a WAL fdatasync under load took 270-574 us on average with the blocks written
// ahead and 350-844 us without at one device (16 publishes a commit), 428-465 against 635-676 us
// at 20 devices (bench/bench.py's walSyncAvgUs, runs alternating; docs/measurements.md). Those
// figures leave out the write-ahead itself (RocksDB times only its Sync): a MiB of zeros and its
// fdatasync took 1.2 ms, about 4 us a commit at one device and 30 us at 20, once spread over the
// commits that fill the MiB; the rates and CPU of the same runs include it.
//
// Only one thread appends to a WAL file at a time (RocksDB's write-group leader; st_db sets
// neither two_write_queues nor manual_wal_flush), so WalFile needs no lock of its own.
class WalFile : public rocksdb::FSWritableFileOwnerWrapper {
  public:
    WalFile(std::unique_ptr<rocksdb::FSWritableFile> &&file, int fd) : FSWritableFileOwnerWrapper(std::move(file)), fd_(fd)
    {
    }
    ~WalFile() override { stop(); }
    WalFile(const WalFile &) = delete;
    WalFile &operator=(const WalFile &) = delete;

    void PrepareWrite(size_t offset, size_t len, const rocksdb::IOOptions &options, rocksdb::IODebugContext *dbg) override
    {
        target()->PrepareWrite(offset, len, options, dbg);   // the preallocation, with its size set
        if (fd_ >= 0 && offset + len > written_)
            write_ahead(offset, offset + len);
    }
    rocksdb::IOStatus Close(const rocksdb::IOOptions &options, rocksdb::IODebugContext *dbg) override
    {
        stop();
        return target()->Close(options, dbg);
    }

  private:
    static constexpr uint64_t kAhead = 1 << 20;   // one fill (and its fdatasync) per MiB of log
    static constexpr size_t kZeros = 64 << 10;

    // Write zeros over [written_, need + kAhead), never past the preallocated size, and never
    // below offset: RocksDB passes the file's size so far, where this write starts, and every
    // record is below it. Writing ahead only saves time: when it cannot (no preallocation to
    // write into, a failed write), the file goes on as before, and a real fault of the disk
    // shows on the append and its fsync, where the shard reports it.
    void write_ahead(uint64_t offset, uint64_t need)
    {
        static const char zeros[kZeros] = {0};
        written_ = std::max(written_, offset);
        struct stat st;
        if (fstat(fd_, &st) != 0 || static_cast<uint64_t>(st.st_size) < need) {
            stop();   // not preallocated here (a file system without fallocate)
            return;
        }
        uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(st.st_size), need + kAhead);
        while (written_ < end) {
            size_t n = static_cast<size_t>(std::min<uint64_t>(kZeros, end - written_));
            ssize_t w = pwrite(fd_, zeros, n, static_cast<off_t>(written_));
            if (w <= 0) {
                stop();
                return;
            }
            written_ += static_cast<uint64_t>(w);
        }
        if (fdatasync(fd_) != 0)
            stop();
    }
    void stop()
    {
        if (fd_ >= 0)
            close(fd_);
        fd_ = -1;
    }

    int fd_;                 // a second descriptor of the same file, for the zeros
    uint64_t written_ = 0;   // bytes from the start that hold a record or zeros written here
};

class WalSizedFileSystem : public rocksdb::FileSystemWrapper {
  public:
    WalSizedFileSystem(const std::shared_ptr<rocksdb::FileSystem> &base, bool write_ahead)
        : FileSystemWrapper(base), write_ahead_(write_ahead)
    {
    }
    static const char *kClassName() { return "SacgateWalSizedFileSystem"; }
    const char *Name() const override { return kClassName(); }
    rocksdb::FileOptions OptimizeForLogWrite(const rocksdb::FileOptions &file_options,
                                             const rocksdb::DBOptions &db_options) const override
    {
        rocksdb::FileOptions o = target()->OptimizeForLogWrite(file_options, db_options);
        o.fallocate_with_keep_size = false;
        return o;
    }
    // A new WAL file (RocksDB names them NNNNNN.log; nothing else in a database directory ends
    // so) gets its blocks written ahead; every other file is the default's.
    rocksdb::IOStatus NewWritableFile(const std::string &fname, const rocksdb::FileOptions &options,
                                      std::unique_ptr<rocksdb::FSWritableFile> *result,
                                      rocksdb::IODebugContext *dbg) override
    {
        rocksdb::IOStatus st = target()->NewWritableFile(fname, options, result, dbg);
        static const std::string kLog = ".log";
        if (!write_ahead_ || !st.ok() || options.use_direct_writes || fname.size() <= kLog.size() ||
            fname.compare(fname.size() - kLog.size(), kLog.size(), kLog) != 0)
            return st;
        int fd = open(fname.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            return st;   // the file works without it
        try {
            result->reset(new WalFile(std::move(*result), fd));
        } catch (const std::bad_alloc &) {
            close(fd);   // *result is untouched: the allocation failed before WalFile took it
        }
        return st;
    }

  private:
    bool write_ahead_;   // store.sync = always: without fsyncs there is nothing to spare them
};

}  // namespace

static rocksdb::Env *wal_env(bool write_ahead)
{
    try {
        return rocksdb::NewCompositeEnv(
                   std::make_shared<WalSizedFileSystem>(rocksdb::FileSystem::Default(), write_ahead))
            .release();
    } catch (const std::bad_alloc &) {
        return nullptr;
    }
}

extern "C" sg_rc st_db_wal_presize(rocksdb_options_t *opts, bool write_ahead)
{
    // Two for the process, never freed: every shard's database uses one until the process ends.
    static rocksdb::Env *const with = wal_env(true), *const without = wal_env(false);
    rocksdb::Env *env = write_ahead ? with : without;
    if (opts == nullptr)
        return SG_E_INVALID;
    if (env == nullptr)
        return SG_E_NOMEM;
    opts->rep.env = env;
    return SG_OK;
}
