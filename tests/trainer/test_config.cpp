#include <gtest/gtest.h>
#include "trainer/config_loader.h"
TEST(Config, Defaults) { EXPECT_NO_THROW(shoestring::load_config_text("", "x.yaml")); }
