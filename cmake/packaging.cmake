# Installing and packaging: `make install PREFIX=... DESTDIR=...` (cmake --install) and
# `make deb` (CPack). The balancer goes to PREFIX/bin/juggler, its --help text to
# PREFIX/share/doc/juggler; install_etc.cmake puts the configuration where the final
# prefix wants it (only known at install time: cpack installs with /usr), and
# PREFIX/bin/juggler-reload, which needs that path.
install(PROGRAMS $<TARGET_FILE:app> DESTINATION bin RENAME juggler)
# What a reload on an installed system builds with (no source tree there): the generator,
# the one header a generated table includes (its hash is the table ABI the balancer checks)
# and the script that holds the compiler flags (tools/reload.sh, also `make reload`'s).
install(PROGRAMS "${CMAKE_SOURCE_DIR}/tools/reload.sh" DESTINATION share/juggler)
install(FILES ${JUGGLER_CODEGEN_FILES} DESTINATION share/juggler/codegen)
install(FILES "${CMAKE_SOURCE_DIR}/include/juggler/route.hpp" DESTINATION share/juggler/include/juggler)
install(CODE "set(JUGGLER_SOURCE \"${CMAKE_SOURCE_DIR}\")
set(JUGGLER_ROUTES \"${JUGGLER_ROUTES}\")
set(JUGGLER_APP \"$<TARGET_FILE:app>\")
set(JUGGLER_WORK \"${CMAKE_BINARY_DIR}/install-gen\")")
install(SCRIPT "${CMAKE_SOURCE_DIR}/cmake/install_etc.cmake")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME juggler)
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "HTTP/1.1 and L4 load balancer whose routing is compiled from routes.def")
set(CPACK_PACKAGE_CONTACT "Juggler maintainers <juggler@localhost>")
set(CPACK_SET_DESTDIR ON)  # absolute /etc paths land in the package, not on this machine
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # Depends: from the libraries the binary links (dpkg-shlibdeps)
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "logrotate")
# Recommends, not Depends: the balancer runs without them, only `systemctl reload`
# (juggler-reload: the generator and a C++20 compiler) needs them; apt installs
# Recommends by default, and a minimal image (--no-install-recommends) can leave the
# ~200 MB toolchain out and restart with a new build instead.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "python3, g++")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# The operator's edits of these survive an upgrade (dpkg asks).
file(WRITE "${CMAKE_BINARY_DIR}/deb/conffiles" "/etc/juggler/routes.def\n/etc/logrotate.d/juggler\n")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA "${CMAKE_BINARY_DIR}/deb/conffiles")
set(CPACK_PACKAGE_DIRECTORY "${CMAKE_BINARY_DIR}/package")
include(CPack)
