# llhttp from the C sources Debian's node-llhttp ships (dpkg -L node-llhttp).
find_path(LLHTTP_INCLUDE_DIR llhttp.h PATHS /usr/share/include/llhttp /usr/include/llhttp REQUIRED)
find_path(LLHTTP_SOURCE_DIR llhttp.c PATHS /usr/share/llhttp REQUIRED)
add_library(llhttp STATIC
  "${LLHTTP_SOURCE_DIR}/api.c" "${LLHTTP_SOURCE_DIR}/http.c" "${LLHTTP_SOURCE_DIR}/llhttp.c")
target_include_directories(llhttp SYSTEM PUBLIC "${LLHTTP_INCLUDE_DIR}")
# Third-party C: build it warning-free but do not let its warnings fail ours.
target_compile_options(llhttp PRIVATE -w -O2)
set_target_properties(llhttp PROPERTIES POSITION_INDEPENDENT_CODE ON)
