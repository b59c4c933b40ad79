// bin/app.out: the balancer, with the route table of one routes file linked in.
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "juggler/config.hpp"
#include "juggler/log.hpp"
#include "juggler/runtime.hpp"

namespace {

// --table / --table-if-exists: the table object to start on, checked as a
// reload checks it. A file that is named but cannot be used stops the start
// (rather than serving the linked-in routes, which is what the operator's
// last reload replaced). Empty, or why not.
std::string start_table(const juggler::Options& opts, juggler::TableObject& object) {
  std::string path = opts.table;
  if (path.empty() && !opts.table_if_exists.empty()) {
    struct stat st{};
    // lstat: a symlink whose table is gone is an error, not an absent file.
    if (::lstat(opts.table_if_exists.c_str(), &st) != 0) {
      if (errno != ENOENT) return opts.table_if_exists + ": " + std::strerror(errno);
      juggler::log(juggler::LogLevel::Info, "no %s (no reload yet): the linked-in table",
                   opts.table_if_exists.c_str());
      return {};
    }
    // A binary installed after the last reload (a new package: its routes,
    // perhaps its table ABI) is the newer intent: its own table, said loudly.
    // ctime, not mtime: dpkg keeps a file's build-time mtime.
    struct stat exe{};
    if (::stat("/proc/self/exe", &exe) == 0 &&
        (exe.st_ctim.tv_sec > st.st_ctim.tv_sec ||
         (exe.st_ctim.tv_sec == st.st_ctim.tv_sec && exe.st_ctim.tv_nsec > st.st_ctim.tv_nsec))) {
      juggler::log(juggler::LogLevel::Warn,
                   "%s is older than this binary (installed after the last reload): the linked-in table; "
                   "reload to serve the routes file again",
                   opts.table_if_exists.c_str());
      return {};
    }
    path = opts.table_if_exists;
  }
  if (path.empty()) return {};
  if (std::string err = juggler::load_table(path, object); !err.empty()) return "--table " + path + ": " + err;
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  using namespace juggler;
  Options opts;
  if (int rc = parse_options(argc, argv, route_table(), opts); rc >= 0) return rc;
  set_log_level(opts.log_level);
  if (!opts.reload.empty()) return reload_client(opts.control, opts.reload);
  TableObject object;  // the --table object: loaded until the process ends
  if (std::string err = start_table(opts, object); !err.empty()) {
    std::fprintf(stderr, "juggler: refusing to start: %s\n", err.c_str());
    return 2;
  }
  const RouteTable& table = object.table ? *object.table : route_table();
  if (object.table)
    log(LogLevel::Info, "table from %s (routes from %s)", (opts.table.empty() ? opts.table_if_exists : opts.table).c_str(),
        std::string(table.source).c_str());
  try {
    Config config = make_config(table, opts);
    std::string missing = unsupported_features(table);
    if (opts.check) {
      std::fputs(describe_config(config).c_str(), stdout);
      if (!missing.empty()) std::printf("\nnot available in this build:\n%s", missing.c_str());
      return 0;
    }
    if (!missing.empty()) {
      std::fprintf(stderr, "%sjuggler: refusing to start: remove these statements or build a version that has them\n",
                   missing.c_str());
      return 2;
    }
    return run(config);
  } catch (const std::exception& e) {
    log(LogLevel::Error, "%s", e.what());
    return 1;
  }
}
