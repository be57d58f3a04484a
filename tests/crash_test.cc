// Crash safety, out-of-space and concurrent runs, through the real binary:
// whatever happens to `moepack convert`, DST either does not exist or is a
// complete conversion that `moepack verify` accepts, and temporaries of a
// run that died are removed (and reported) by the next run.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "hostile/proc.h"
#include "testutil.h"

namespace moepack::testing {
namespace crash_test {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

std::vector<std::string> Temporaries(const std::string& parent) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(parent)) {
    const std::string n = e.path().filename().string();
    if (n.find(".moepack-tmp-") != std::string::npos) out.push_back(n);
  }
  return out;
}

std::string Joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// A synthetic Qwen3-MoE checkpoint written by `moepack synth`.
void Synth(const std::string& dst, const std::vector<std::string>& flags, const std::string& io) {
  std::vector<std::string> argv = {MOEPACK_BINARY, "synth", dst, "--model-type", "qwen3_moe"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  Exit r = RunProcess(argv, io);
  ASSERT_TRUE(r.exited && r.code == 0) << r.Describe() << "\n" << r.err;
}

void ExpectVerified(const std::string& src, const std::string& dst, const std::string& io, const std::string& what) {
  Exit v = RunProcess({MOEPACK_BINARY, "verify", src, dst}, io);
  EXPECT_TRUE(v.exited && v.code == 0) << what << ": DST exists but verify says " << v.Describe() << "\n" << v.err;
}

// One stderr line, "moepack: error: ...".
void ExpectOneErrorLine(const Exit& r, const std::string& what) {
  EXPECT_TRUE(r.exited) << what << ": " << r.Describe();
  EXPECT_EQ(r.code, 1) << what << ": " << r.Describe() << "\n" << r.err;
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << what << ": stderr:\n" << r.err;
  EXPECT_EQ(lines[0].rfind("moepack: error: ", 0), 0u) << lines[0];
}

std::vector<std::string> ConvertArgs(const std::string& src, const std::string& dst) {
  // Several output shards and an index, so a kill can land between files.
  return {MOEPACK_BINARY, "convert", src, dst, "--max-shard-size", "60MB", "--threads", "2"};
}

// SIGKILL at seeded random points of a ~200 MB conversion (64 experts,
// hidden 512, intermediate 256, 4 layers).
TEST(CrashTest, KillAtRandomPointsNeverLeavesPartialOutput) {
  TempDir t, io;
  const std::string src = t / "src", dst = t / "dst";
  Synth(src, {"--experts", "64", "--hidden", "512", "--intermediate", "256", "--layers", "4", "--max-shard-size", "40MB"},
        io.path());
  const std::string src_hash = HashTree(src);

  // One full run measures how long a conversion takes.
  const auto t0 = std::chrono::steady_clock::now();
  Exit full = RunProcess(ConvertArgs(src, dst), io.path());
  const auto duration = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - t0);
  ASSERT_TRUE(full.exited && full.code == 0) << full.Describe() << "\n" << full.err;
  ExpectVerified(src, dst, io.path(), "uninterrupted run");
  fs::remove_all(dst);

  std::mt19937 rng(20240611);
  std::uniform_int_distribution<int64_t> delay(0, duration.count());
  int killed_with_temp = 0, finished = 0, cleanups = 0;
  constexpr int kTrials = 24;
  for (int trial = 0; trial < kTrials; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    const auto temps_before = Temporaries(t.path());
    {
      Child c(ConvertArgs(src, dst), io.path());
      std::this_thread::sleep_for(milliseconds(delay(rng)));
      c.Kill(SIGKILL);
      Exit r = c.Wait();
      if (r.exited) {
        EXPECT_EQ(r.code, 0) << r.err;  // finished before the kill
        ++finished;
      }
    }
    if (fs::exists(dst)) {
      ExpectVerified(src, dst, io.path(), "after SIGKILL");
      fs::remove_all(dst);
    }
    for (const auto& tmp : Temporaries(t.path())) {
      if (std::find(temps_before.begin(), temps_before.end(), tmp) == temps_before.end()) ++killed_with_temp;
    }
    // The first time a kill leaves a temporary, every few trials after, and at
    // the end: the next run removes what the killed runs left and says so. (Each
    // trial's own run also clears its predecessors' leftovers, so a fixed
    // cadence alone could miss them all on a loaded machine.)
    if (!Temporaries(t.path()).empty() && (cleanups == 0 || trial % 4 == 3 || trial == kTrials - 1)) {
      const auto before = Temporaries(t.path());
      Exit r = RunProcess(ConvertArgs(src, dst), io.path());
      ASSERT_TRUE(r.exited && r.code == 0) << r.Describe() << "\n" << r.err;
      EXPECT_NE(r.err.find("removed leftover of a killed run"), std::string::npos) << r.err;
      for (const auto& tmp : before) EXPECT_NE(r.err.find(tmp), std::string::npos) << tmp << " not reported:\n" << r.err;
      EXPECT_TRUE(Temporaries(t.path()).empty()) << Joined(Temporaries(t.path()));
      ExpectVerified(src, dst, io.path(), "run after kills");
      fs::remove_all(dst);
      ++cleanups;
    }
  }
  EXPECT_GE(killed_with_temp, kTrials / 4) << "the kills should mostly land mid-conversion";
  EXPECT_GT(cleanups, 0);
  EXPECT_TRUE(Temporaries(t.path()).empty()) << Joined(Temporaries(t.path()));
  EXPECT_EQ(HashTree(src), src_hash) << "SRC changed";
  std::printf("conversion %lld ms; %d/%d trials killed mid-run with a temporary left, %d finished first\n",
              static_cast<long long>(duration.count()), killed_with_temp, kTrials, finished);
}

// Replacing an existing DST (--force) and getting killed: DST is the old
// conversion or the new one, whole either way.
TEST(CrashTest, KillDuringForcedReplaceKeepsAWholeDestination) {
  TempDir t, io;
  const std::string src = t / "src", dst = t / "dst";
  Synth(src, {"--experts", "32", "--hidden", "512", "--intermediate", "256", "--layers", "2"}, io.path());
  const auto t0 = std::chrono::steady_clock::now();
  Exit first = RunProcess(ConvertArgs(src, dst), io.path());
  const auto duration = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - t0);
  ASSERT_TRUE(first.exited && first.code == 0) << first.err;

  std::mt19937 rng(7);
  std::uniform_int_distribution<int64_t> delay(0, duration.count() + 20);
  for (int trial = 0; trial < 8; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    auto argv = ConvertArgs(src, dst);
    argv.push_back("--force");
    Child c(argv, io.path());
    std::this_thread::sleep_for(milliseconds(delay(rng)));
    c.Kill(SIGKILL);
    c.Wait();
    ASSERT_TRUE(fs::exists(dst)) << "a forced replace lost DST";
    ExpectVerified(src, dst, io.path(), "after SIGKILL of --force");
  }
  auto argv = ConvertArgs(src, dst);
  argv.push_back("--force");
  Exit r = RunProcess(argv, io.path());
  ASSERT_TRUE(r.exited && r.code == 0) << r.err;
  EXPECT_TRUE(Temporaries(t.path()).empty()) << Joined(Temporaries(t.path()));
  ExpectVerified(src, dst, io.path(), "final --force run");
}

// A temporary whose owner is alive belongs to a run in progress: kept. One
// whose owner is dead is removed and reported.
TEST(CrashTest, OnlyTemporariesOfDeadRunsAreRemoved) {
  TempDir t, io;
  const std::string src = t / "src", dst = t / "dst";
  Synth(src, {"--layers", "1"}, io.path());
  pid_t dead;
  {
    Child c({"/bin/true"}, io.path());
    dead = c.pid();
    c.Wait();
  }
  const std::string live_tmp = t / (".dst.moepack-tmp-" + std::to_string(::getpid()) + "-1");
  const std::string dead_tmp = t / (".dst.moepack-tmp-" + std::to_string(dead) + "-2");
  fs::create_directories(live_tmp);
  fs::create_directories(dead_tmp + "/sub");
  WriteFileOrDie(dead_tmp + "/model.safetensors", "partial");
  Exit r = RunProcess({MOEPACK_BINARY, "convert", src, dst}, io.path());
  ASSERT_TRUE(r.exited && r.code == 0) << r.err;
  EXPECT_NE(r.err.find("removed leftover of a killed run: " + dead_tmp), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(live_tmp), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dead_tmp));
  EXPECT_TRUE(fs::exists(live_tmp));
  ExpectVerified(src, dst, io.path(), "convert beside a live temporary");
}

// Out of space, simulated with RLIMIT_FSIZE: writes past the limit fail
// with EFBIG (the CLI ignores SIGXFSZ). Limits from 1 KiB to past the first
// output shard make the failure land at different writes.
TEST(OutOfSpaceTest, FileSizeLimitFailsCleanly) {
  TempDir t, io;
  const std::string src = t / "src", dst = t / "dst";
  Synth(src, {"--experts", "16", "--hidden", "512", "--intermediate", "256", "--layers", "2"}, io.path());
  const std::string src_hash = HashTree(src);
  for (const char* blocks : {"1", "8", "2000", "5000"}) {
    SCOPED_TRACE(std::string("ulimit -f ") + blocks);
    Exit r = RunProcess({MOEPACK_BINARY, "convert", src, dst, "--max-shard-size", "5MB"}, io.path(),
                        std::string("ulimit -f ") + blocks);
    ExpectOneErrorLine(r, "convert under ulimit -f");
    EXPECT_NE(r.err.find("File too large"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dst));
    EXPECT_TRUE(Temporaries(t.path()).empty()) << Joined(Temporaries(t.path()));
  }
  EXPECT_EQ(HashTree(src), src_hash);
}

// Runs `moepack convert SRC MNT/dst` in a private mount namespace with a
// small tmpfs at MNT; prints the listing of MNT after the run. Skips when
// mounting is not permitted here.
struct TmpfsRun {
  Exit exit;
  std::string listing;
};
std::optional<TmpfsRun> ConvertIntoTmpfs(const std::string& src, const std::string& mnt, const std::string& opts,
                                         const std::string& io, const std::vector<std::string>& extra = {}) {
  std::string cmd = "mount -t tmpfs -o " + opts + " moepack-test '" + mnt + "' || exit 99; '" MOEPACK_BINARY
                    "' convert '" + src + "' '" + mnt + "/dst'";
  for (const auto& e : extra) cmd += " '" + e + "'";
  cmd += "; rc=$?; ls -A '" + mnt + "' >&2; exit $rc";
  fs::create_directories(mnt);
  Exit r = RunProcess({"/usr/bin/unshare", "-rm", "/bin/sh", "-c", cmd}, io);
  if (r.exited && r.code == 99) return std::nullopt;
  if (!r.exited || r.code == 0) return TmpfsRun{r, ""};
  // stderr: the error line, then the listing.
  auto lines = Lines(r.err);
  TmpfsRun out{r, ""};
  if (!lines.empty()) {
    out.exit.err = lines[0] + "\n";
    for (size_t i = 1; i < lines.size(); ++i) out.listing += lines[i] + "\n";
  }
  return out;
}

// A real ENOSPC on a small tmpfs: too small for the output (refused before
// writing), a few pages short (fails mid-copy: the free-space check counts
// bytes, tmpfs allocates pages), and out of inodes at a shard, at the index
// and at an aux file.
TEST(OutOfSpaceTest, SmallTmpfsFailsCleanly) {
  if (!fs::exists("/usr/bin/unshare")) GTEST_SKIP() << "no unshare";
  TempDir t, io;
  const std::string src = t / "src", ref = t / "ref";
  Synth(src, {"--experts", "16", "--hidden", "512", "--intermediate", "256", "--layers", "2"}, io.path());
  const std::vector<std::string> flags = {"--max-shard-size", "5MB"};
  auto argv = std::vector<std::string>{MOEPACK_BINARY, "convert", src, ref};
  argv.insert(argv.end(), flags.begin(), flags.end());
  Exit r0 = RunProcess(argv, io.path());
  ASSERT_TRUE(r0.exited && r0.code == 0) << r0.err;
  uint64_t need = 0, files = 0;
  for (const auto& e : fs::recursive_directory_iterator(ref)) {
    if (e.is_regular_file()) {
      need += e.file_size();
      ++files;
    }
  }
  const std::string src_hash = HashTree(src);
  struct Setting {
    std::string opts;
    const char* expect;
  };
  const std::vector<Setting> settings = {
      {"size=1m", "not enough free space"},
      {"size=" + std::to_string(need + 4096), "No space left on device"},
      {"size=1g,nr_inodes=4", "No space left on device"},
      {"size=1g,nr_inodes=" + std::to_string(files - 2), "No space left on device"},  // the index
      {"size=1g,nr_inodes=" + std::to_string(files), "No space left on device"},      // an aux file
  };
  for (const Setting& s : settings) {
    SCOPED_TRACE("tmpfs " + s.opts);
    auto run = ConvertIntoTmpfs(src, t / "mnt", s.opts, io.path(), flags);
    if (!run) GTEST_SKIP() << "cannot mount a tmpfs here";
    ExpectOneErrorLine(run->exit, "convert into a full tmpfs");
    EXPECT_NE(run->exit.err.find(s.expect), std::string::npos) << run->exit.err;
    EXPECT_EQ(run->listing, "") << "left behind on the tmpfs:\n" << run->listing;
  }
  EXPECT_EQ(HashTree(src), src_hash);
}

// Two conversions to the same DST at once: one wins, the other fails with a
// message, and DST is whole.
TEST(ConcurrentTest, TwoRunsToOneDestination) {
  TempDir t, io;
  const std::string src = t / "src", dst = t / "dst";
  Synth(src, {"--experts", "32", "--hidden", "512", "--intermediate", "256", "--layers", "2"}, io.path());
  for (int round = 0; round < 6; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    Child a(ConvertArgs(src, dst), io.path());
    Child b(ConvertArgs(src, dst), io.path());
    Exit ra = a.Wait(), rb = b.Wait();
    ASSERT_TRUE(ra.exited && rb.exited) << ra.Describe() << " / " << rb.Describe();
    EXPECT_EQ((ra.code == 0) + (rb.code == 0), 1) << "exits " << ra.code << " and " << rb.code << "\n"
                                                  << ra.err << rb.err;
    const Exit& loser = ra.code == 0 ? rb : ra;
    ExpectOneErrorLine(loser, "the run that lost");
    const bool named = loser.err.find("already exists") != std::string::npos ||
                       loser.err.find("appeared while converting") != std::string::npos;
    EXPECT_TRUE(named) << loser.err;
    ExpectVerified(src, dst, io.path(), "the winner's DST");
    EXPECT_TRUE(Temporaries(t.path()).empty()) << Joined(Temporaries(t.path()));
    fs::remove_all(dst);
  }
}

}  // namespace
}  // namespace crash_test
}  // namespace moepack::testing
