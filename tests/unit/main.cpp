// The doctest runner of lowbit's unit tests: every other file in tests/unit only registers cases.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
