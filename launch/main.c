/* medtrain command-line entry point. */
#include <stdio.h>
#include <string.h>

#include "launch/cli.h"

int main(int argc, char **argv) { return mt_cli_main(argc, argv); }
