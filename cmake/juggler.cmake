# juggler_generate(TARGET ROUTES OUTPUT [ENTRY])
#   Runs the code generator on ROUTES and writes OUTPUT; re-runs when the routes
#   file or any file of the generator changes. TARGET builds just that file.
#   ENTRY names the function that returns the table (default route_table, the
#   one a balancer binary links); other names let one program link several.
set(JUGGLER_CODEGEN "${CMAKE_SOURCE_DIR}/codegen/gen_distributer.py")
file(GLOB JUGGLER_CODEGEN_FILES CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/codegen/*.py")

function(juggler_generate target routes output)
  set(entry route_table)
  if(ARGC GREATER 3)
    set(entry "${ARGV3}")
  endif()
  add_custom_command(
    OUTPUT "${output}"
    COMMAND ${Python3_EXECUTABLE} "${JUGGLER_CODEGEN}" "${routes}" -o "${output}" --entry "${entry}"
    DEPENDS "${routes}" ${JUGGLER_CODEGEN_FILES}
    WORKING_DIRECTORY "${CMAKE_SOURCE_DIR}"
    COMMENT "Generating ${output} from ${routes}"
    VERBATIM)
  add_custom_target(${target} DEPENDS "${output}")
endfunction()

# juggler_add_balancer(TARGET GENERATED_CPP OUT_DIR OUT_NAME)
#   One balancer binary: src/main + the core library + one generated table.
function(juggler_add_balancer target generated out_dir out_name)
  if(NOT TARGET juggler_main)
    # main() is the same for every balancer: compiled once.
    add_library(juggler_main OBJECT "${CMAKE_SOURCE_DIR}/src/main/main.cpp")
    target_link_libraries(juggler_main PRIVATE juggler_core)
  endif()
  add_executable(${target} $<TARGET_OBJECTS:juggler_main> "${generated}")
  target_link_libraries(${target} PRIVATE juggler_core)
  set_target_properties(${target} PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${out_dir}" OUTPUT_NAME "${out_name}")
endfunction()

# juggler_routes_balancer(NAME ROUTES)
#   A balancer built from a test routes file: ${CMAKE_BINARY_DIR}/routes-bin/NAME.
function(juggler_routes_balancer name routes)
  set(gen "${CMAKE_BINARY_DIR}/routes-gen/${name}/distributer.cpp")
  juggler_generate(routes_${name} "${routes}" "${gen}")
  juggler_add_balancer(balancer_${name} "${gen}" "${CMAKE_BINARY_DIR}/routes-bin" "${name}")
  set_target_properties(balancer_${name} PROPERTIES EXCLUDE_FROM_ALL ON)
endfunction()
