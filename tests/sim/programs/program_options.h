// The command line of the simulator's test programs: `<program> <case> [seed] [t|r|w|p][b]`.
// set_schedule_from_args sets the simulator's schedule from it; false (after printing the
// usage) when no case is named. run_case runs the named case.
#pragma once

#if defined(KDOPS_SIM)  // the programs' main() runs on the simulator only

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <string>
#include <utility>

inline bool set_schedule_from_args(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <case> [seed] [t|r|w|p][b]\n", argv[0]);
    return false;
  }
  kdops::sim::Options options;
  options.seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 0;
  const std::string flags = argc > 3 ? argv[3] : "";
  // The thread schedule: t random, r run-ahead, w warp round-robin, p PCT (else in order);
  // b shuffles the block order.
  const std::pair<char, kdops::sim::Schedule> schedules[] = {{'t', kdops::sim::Schedule::kRandom},
                                                             {'r', kdops::sim::Schedule::kRunAhead},
                                                             {'w', kdops::sim::Schedule::kRoundRobin},
                                                             {'p', kdops::sim::Schedule::kPct}};
  for (const auto& [flag, schedule] : schedules) {
    if (flags.find(flag) != std::string::npos) options.threads = schedule;
  }
  options.shuffle_blocks = flags.find('b') != std::string::npos;
  kdops::sim::set_options(options);
  return true;
}

// Runs cases[name]: the exit code 0, 2 for an unknown case, or 3 after printing
// "ERROR: <message>" when the simulator raised (the tests read the message).
inline int run_case(const std::map<std::string, std::function<void()>>& cases, const std::string& name) {
  const auto it = cases.find(name);
  if (it == cases.end()) {
    std::fprintf(stderr, "unknown case %s\n", name.c_str());
    return 2;
  }
  try {
    it->second();
  } catch (const std::exception& e) {
    std::printf("ERROR: %s\n", e.what());
    return 3;
  }
  return 0;
}

#endif
