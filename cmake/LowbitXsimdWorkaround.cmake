# Debian 12's libxsimd-dev (8.1.0-7) exports a target `xsimd` whose INTERFACE_LINK_LIBRARIES names
# `xtl`, but its config never looks for xtl. Without an `xtl` target CMake passes `-lxtl` to the
# linker, which fails: xtl is header-only and only backs xsimd's optional xtl-complex support,
# which lowbit does not use. Find xtl if it is installed; otherwise drop the dangling name.
if(TARGET xsimd AND NOT TARGET xtl)
  get_target_property(_lowbit_xsimd_links xsimd INTERFACE_LINK_LIBRARIES)
  if(_lowbit_xsimd_links AND "xtl" IN_LIST _lowbit_xsimd_links)
    find_package(xtl QUIET)
    if(NOT TARGET xtl)
      list(REMOVE_ITEM _lowbit_xsimd_links xtl)
      set_property(TARGET xsimd PROPERTY INTERFACE_LINK_LIBRARIES "${_lowbit_xsimd_links}")
    endif()
  endif()
  unset(_lowbit_xsimd_links)
endif()
