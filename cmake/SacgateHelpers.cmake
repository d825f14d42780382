# Small helpers so each folder's CMakeLists.txt lists only its sources and tests.

# Warnings for all project code (the two prototype ones are C's, for C files only); -Werror when
# SACGATE_WERROR is on (CI and tests/run.sh).
function(sg_compile_flags)
  add_compile_definitions(_GNU_SOURCE)
  add_compile_options(-Wall -Wextra -Wshadow -Wformat=2 -Wpointer-arith -Wvla -Wno-unused-parameter
                      -fno-strict-aliasing "$<$<COMPILE_LANGUAGE:C>:-Wstrict-prototypes;-Wmissing-prototypes>")
  if(SACGATE_WERROR)
    add_compile_options(-Werror)
  endif()
  if(SACGATE_SANITIZE)
    add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                        -fno-omit-frame-pointer)
    add_link_options(-fsanitize=address,undefined)
  endif()
  if(SACGATE_FUZZ)
    # Coverage instrumentation for the libraries under test, not only the harnesses.
    add_compile_options(-fsanitize=fuzzer-no-link)
  endif()
endfunction()

# sg_add_library(name SOURCES a.c b.c LIBS x y)
function(sg_add_library name)
  cmake_parse_arguments(A "" "" "SOURCES;LIBS" ${ARGN})
  add_library(${name} STATIC ${A_SOURCES})
  target_include_directories(${name} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${A_LIBS})
endfunction()

# sg_add_unit_test(name SOURCES t.c LIBS lib [TIMEOUT s])
# A unit test is a C program that exits 0 on success; it lives next to the code it tests.
function(sg_add_unit_test name)
  cmake_parse_arguments(A "" "TIMEOUT" "SOURCES;LIBS" ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 60)
  endif()
  add_executable(${name} ${A_SOURCES})
  target_link_libraries(${name} PRIVATE ${A_LIBS})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${A_TIMEOUT} LABELS unit)
endfunction()

# sg_add_fuzzer(name SOURCES f.c LIBS lib): a libFuzzer harness, built only with SACGATE_FUZZ.
# Without SACGATE_FUZZ the same harness is built against a small driver that replays the
# seed corpus, so every build at least runs the harness code once per seed.
function(sg_add_fuzzer name)
  cmake_parse_arguments(A "" "CORPUS" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${A_SOURCES})
  target_link_libraries(${name} PRIVATE ${A_LIBS})
  if(SACGATE_FUZZ)
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  else()
    target_sources(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests/fuzz/replay_main.c)
    if(A_CORPUS)
      add_test(NAME ${name}_replay COMMAND ${name} ${A_CORPUS})
      set_tests_properties(${name}_replay PROPERTIES TIMEOUT 60 LABELS unit)
    endif()
  endif()
endfunction()
