# The git commit `shoestring --version` prints and checkpoints record. CMake re-runs this when HEAD
# or the branch it names moves, so a build after a commit never reports the previous one.
execute_process(COMMAND git rev-parse --short=12 HEAD
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR} OUTPUT_VARIABLE SHOESTRING_GIT_COMMIT
  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _git_rc)
if(NOT _git_rc EQUAL 0 OR SHOESTRING_GIT_COMMIT STREQUAL "")
  set(SHOESTRING_GIT_COMMIT "unknown")
else()
  execute_process(COMMAND git symbolic-ref -q HEAD WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
    OUTPUT_VARIABLE _git_ref OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  foreach(_name HEAD ${_git_ref})
    execute_process(COMMAND git rev-parse --path-format=absolute --git-path ${_name}
      WORKING_DIRECTORY ${CMAKE_SOURCE_DIR} OUTPUT_VARIABLE _path OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(_path AND EXISTS "${_path}")
      set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${_path}")
    endif()
  endforeach()
endif()
configure_file(${CMAKE_SOURCE_DIR}/cmake/build_info.h.in ${CMAKE_BINARY_DIR}/generated/shoestring/build_info.h @ONLY)
