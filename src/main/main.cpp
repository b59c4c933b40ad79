// bin/app.out: the balancer, with the route table of one routes file linked in.
#include <cstdio>
#include <exception>

#include "juggler/config.hpp"
#include "juggler/log.hpp"
#include "juggler/runtime.hpp"

int main(int argc, char** argv) {
  using namespace juggler;
  const RouteTable& table = route_table();
  Options opts;
  if (int rc = parse_options(argc, argv, table, opts); rc >= 0) return rc;
  set_log_level(opts.log_level);
  if (!opts.reload.empty()) return reload_client(opts.control, opts.reload);
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
