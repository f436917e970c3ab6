// What a job does when a rank misbehaves: run comm_fault_helper under mpirun and check how the
// job ended and what it printed.
#include <gtest/gtest.h>

#include <string>

#include "tests/run_cli.h"

namespace {

using JobResult = shoestring::testing::CliResult;

JobResult run_job(const std::string& mode, const std::string& env = "") {
  return shoestring::testing::run_command(env + " OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 "
                                          "timeout 120 " SHOESTRING_MPIEXEC " --oversubscribe -np 3 " SHOESTRING_FAULT_HELPER
                                          " " + mode);
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(CommFaults, HungRankIsNamedAndTheJobExitsWithTheTimeoutCode) {
  const JobResult r = run_job("hang");
  EXPECT_EQ(r.code, 3) << r.output;
  EXPECT_LT(r.seconds, 60) << r.output;
  EXPECT_NE(r.output.find("comm timeout: all_reduce #3 on group world (world ranks 0-2) did not finish in 2 s; "
                          "waiting in it: ranks 0,2; not in communication: rank 1 (hung or busy outside communication)"),
            std::string::npos)
      << r.output;
  // The lowest waiting rank reports; another waiting rank reports too only if the abort takes
  // longer than its grace period (seen on this 2-core VM under load).
  EXPECT_GE(count(r.output, "comm timeout"), 1u) << r.output;
  EXPECT_LE(count(r.output, "comm timeout"), 2u) << r.output;
  EXPECT_EQ(r.output.find("finished"), std::string::npos) << r.output;
}

// The point-to-point collectives (p2p_collectives.h) stop in the middle of their steps; the
// watchdog must still see the operation and hold the roll call.
TEST(CommFaults, StuckPointToPointCollectivesTimeOutWithTheReport) {
  for (const std::string op : {"all_reduce", "all_gather", "broadcast"}) {
    const JobResult r = run_job("hang:" + op, "SHOESTRING_MPI_RING_MIN_BYTES=1");
    EXPECT_EQ(r.code, 3) << op << ": " << r.output;
    EXPECT_NE(r.output.find("comm timeout: " + op + " #3 on group world (world ranks 0-2) did not finish in 2 s; " +
                            "waiting in it: ranks 0,2; not in communication: rank 1"),
              std::string::npos)
        << op << ": " << r.output;
    EXPECT_EQ(r.output.find("finished"), std::string::npos) << op << ": " << r.output;
  }
}

TEST(CommFaults, MismatchedCollectiveIsReported) {
  const JobResult r = run_job("mismatch");
  EXPECT_EQ(r.code, 3) << r.output;
  // Both sides are stuck, each in a different collective; whichever reports first names the other
  // side's operation (rank 1 waits on group "other", ranks 0 and 2 on the world).
  const bool zero_reported =
      r.output.find("in another operation (mismatched collectives?): rank 1 in all_reduce #1 on group other") !=
      std::string::npos;
  const bool one_reported =
      r.output.find("in another operation (mismatched collectives?): rank 0 in all_reduce #3 on group world") !=
      std::string::npos;
  EXPECT_TRUE(zero_reported || one_reported) << r.output;
}

// Open MPI's mpirun ends the job when a rank exits without MPI_Finalize, long before the 60 s
// timeout the helper uses in this mode.
TEST(CommFaults, ExitedRankEndsTheJob) {
  const JobResult r = run_job("exit");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_LT(r.seconds, 45) << r.output;
  EXPECT_EQ(r.output.find("finished"), std::string::npos) << r.output;
}

}  // namespace
