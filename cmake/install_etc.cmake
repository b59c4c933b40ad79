# Runs at install time (install(SCRIPT) in packaging.cmake), when CMAKE_INSTALL_PREFIX is
# the final one. Configuration goes to /etc for the prefix /usr (the .deb), else to
# PREFIX/etc, as GNUInstallDirs does; file(INSTALL) honours DESTDIR.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(JUGGLER_ETC "/etc")
else()
  set(JUGGLER_ETC "${CMAKE_INSTALL_PREFIX}/etc")
endif()
set(JUGGLER_BIN "${CMAKE_INSTALL_PREFIX}/bin/juggler")
set(JUGGLER_ETC_DIR "${JUGGLER_ETC}/juggler")
set(JUGGLER_DOC_DIR "${CMAKE_INSTALL_PREFIX}/share/doc/juggler")
set(JUGGLER_RELOAD "${CMAKE_INSTALL_PREFIX}/bin/juggler-reload")

file(MAKE_DIRECTORY "${JUGGLER_WORK}/certs")
configure_file("${JUGGLER_SOURCE}/deploy/juggler.service.in" "${JUGGLER_WORK}/juggler.service" @ONLY)
configure_file("${JUGGLER_SOURCE}/deploy/logrotate.in" "${JUGGLER_WORK}/juggler" @ONLY)
configure_file("${JUGGLER_SOURCE}/deploy/juggler-reload.in" "${JUGGLER_WORK}/juggler-reload" @ONLY)
configure_file("${JUGGLER_ROUTES}" "${JUGGLER_WORK}/routes.def" COPYONLY)
execute_process(COMMAND "${JUGGLER_APP}" --help OUTPUT_FILE "${JUGGLER_WORK}/juggler.help" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${JUGGLER_APP} --help failed (${rc})")
endif()

file(INSTALL "${JUGGLER_WORK}/routes.def" DESTINATION "${JUGGLER_ETC_DIR}")
file(INSTALL "${JUGGLER_WORK}/certs" DESTINATION "${JUGGLER_ETC_DIR}" DIR_PERMISSIONS
     OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE)
file(INSTALL "${JUGGLER_WORK}/juggler" DESTINATION "${JUGGLER_ETC}/logrotate.d")
file(INSTALL "${JUGGLER_WORK}/juggler.service" DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
file(INSTALL "${JUGGLER_WORK}/juggler.help" DESTINATION "${JUGGLER_DOC_DIR}")
file(INSTALL "${JUGGLER_WORK}/juggler-reload" DESTINATION "${CMAKE_INSTALL_PREFIX}/bin" FILE_PERMISSIONS
     OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
