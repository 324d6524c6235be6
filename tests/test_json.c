/* LABELS: unit */
/* core/json: the strict JSON reader (values, escapes, numbers, errors with
 * line:column, typed accessors). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "mt_test.h"

static mt_json *parse_ok(const char *text) {
    mt_json *j = NULL;
    mt_status st = mt_json_parse(&j, text, strlen(text), "t.json");
    CHECK_MSG(st == MT_OK && j, "parse of %s failed: %s", text, mt_error_msg());
    return j;
}

/* Expects a parse error whose message contains `where` ("t.json:L:C") and `what`. */
static void parse_bad(const char *text, size_t len, const char *where, const char *what) {
    mt_json *j = (mt_json *)1;
    mt_status st = mt_json_parse(&j, text, len, "t.json");
    const char *m = mt_error_msg();
    CHECK_MSG(st == MT_ERR_FORMAT && j == NULL, "accepted invalid JSON %.40s", text);
    CHECK_MSG(strstr(m, where) != NULL, "error for %.40s lacks %s: %s", text, where, m);
    CHECK_MSG(strstr(m, what) != NULL, "error for %.40s lacks \"%s\": %s", text, what, m);
}
#define BAD(text, where, what) parse_bad(text, sizeof(text) - 1, where, what)

static void test_values(void) {
    mt_json *j = parse_ok(" {\"name\": \"Hippocampus\", \"n\": 260, \"x\": -1.5e2, \"ok\": true,\n"
                          "  \"no\": false, \"nil\": null, \"arr\": [1, [2, {}], []], \"o\": {\"k\": \"v\"}} ");
    if (!j) return;
    CHECK(j->type == MT_JSON_OBJECT && mt_json_len(j) == 8);
    const char *s = NULL;
    CHECK(mt_json_as_string(mt_json_get(j, "name"), &s, "name") == MT_OK && strcmp(s, "Hippocampus") == 0);
    int64_t n = 0;
    CHECK(mt_json_as_int(mt_json_get(j, "n"), &n, "n") == MT_OK && n == 260);
    double x = 0;
    CHECK(mt_json_as_double(mt_json_get(j, "x"), &x, "x") == MT_OK && x == -150.0);
    int b = -1;
    CHECK(mt_json_as_bool(mt_json_get(j, "ok"), &b, "ok") == MT_OK && b == 1);
    CHECK(mt_json_as_bool(mt_json_get(j, "no"), &b, "no") == MT_OK && b == 0);
    CHECK(mt_json_get(j, "nil")->type == MT_JSON_NULL);
    const mt_json *arr = mt_json_get(j, "arr");
    CHECK(mt_json_len(arr) == 3 && mt_json_len(mt_json_at(arr, 1)) == 2);
    CHECK(mt_json_at(mt_json_at(arr, 1), 1)->type == MT_JSON_OBJECT);
    CHECK(mt_json_at(arr, 3) == NULL && mt_json_at(arr, -1) == NULL);
    CHECK(mt_json_get(j, "missing") == NULL && mt_json_get(arr, "k") == NULL);
    CHECK(mt_json_get(mt_json_get(j, "o"), "k")->type == MT_JSON_STRING);
    /* positions: "arr" value starts at line 2 */
    CHECK_MSG(arr->line == 2 && arr->col == 36, "arr at %d:%d", arr->line, arr->col);
    const mt_json *req = NULL;
    CHECK(mt_json_require(&req, j, "n") == MT_OK && req == mt_json_get(j, "n"));
    CHECK(mt_json_require(&req, j, "absent") == MT_ERR_FORMAT && req == NULL);
    CHECK_MSG(strstr(mt_error_msg(), "t.json:1:2: missing key \"absent\"") != NULL, "%s", mt_error_msg());
    mt_json_free(j);
    /* scalars at top level */
    j = parse_ok("  42  ");
    if (j) CHECK(j->type == MT_JSON_NUMBER && j->is_int && j->integer == 42);
    mt_json_free(j);
    j = parse_ok("\"x\"");
    if (j) CHECK(j->type == MT_JSON_STRING && j->string_len == 1);
    mt_json_free(j);
}

static void test_strings(void) {
    mt_json *j = parse_ok("[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\", \"\\u00e9\\u20AC\", \"\\ud83d\\ude00\", "
                          "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"]");
    if (!j) return;
    CHECK(strcmp(j->items[0].string, "a\"b\\c/d\b\f\n\r\t") == 0);
    CHECK(j->items[0].string_len == 12);
    CHECK(strcmp(j->items[1].string, "\xc3\xa9\xe2\x82\xac") == 0);         /* é € */
    CHECK(strcmp(j->items[2].string, "\xf0\x9f\x98\x80") == 0);             /* U+1F600 */
    CHECK(strcmp(j->items[3].string, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == 0);
    mt_json_free(j);
    /* object keys are decoded too */
    j = parse_ok("{\"\\u0041b\": 1}");
    if (j) CHECK(mt_json_get(j, "Ab") != NULL);
    mt_json_free(j);
}

static void test_numbers(void) {
    mt_json *j = parse_ok("[0, -0, 1e3, 1.0, 2.5E-3, 9223372036854775807, -9223372036854775808, "
                          "9223372036854775808, 123456789012345678901234567890, 1e-400]");
    if (!j) return;
    int64_t v = 0;
    CHECK(j->items[0].is_int && j->items[0].integer == 0);
    CHECK(mt_json_as_int(&j->items[2], &v, "a") == MT_OK && v == 1000);
    CHECK(!j->items[3].is_int && mt_json_as_int(&j->items[3], &v, "b") == MT_OK && v == 1);
    CHECK(j->items[4].number == 2.5e-3);
    CHECK(j->items[5].is_int && j->items[5].integer == INT64_MAX);
    CHECK(j->items[6].is_int && j->items[6].integer == INT64_MIN);
    CHECK(!j->items[7].is_int && mt_json_as_int(&j->items[7], &v, "big") == MT_ERR_FORMAT);
    CHECK(j->items[8].number > 1.2e29 && j->items[8].number < 1.3e29);
    CHECK(j->items[9].number == 0.0);
    mt_json_free(j);
}

static void test_errors(void) {
    BAD("{\n  \"a\": 1,\n}", "t.json:3:1", "trailing comma");
    BAD("[1, 2,]", "t.json:1:7", "trailing comma");
    BAD("{\"a\": 1, \"a\": 2}", "t.json:1:10", "duplicate key \"a\"");
    BAD("[\"abc", "t.json:1:2", "unterminated string");
    BAD("[1, 2", "t.json:1:1", "unterminated array");
    BAD("{\"a\": 1", "t.json:1:1", "unterminated object");
    BAD("\"a\nb\"", "t.json:1:3", "control character");
    BAD("\"\xff\"", "t.json:1:2", "invalid UTF-8");
    BAD("\"\xc0\xaf\"", "t.json:1:2", "invalid UTF-8");                /* overlong '/' */
    BAD("\"\xed\xa0\x80\"", "t.json:1:2", "invalid UTF-8");            /* encoded surrogate */
    BAD("\"\\ud83d x\"", "t.json:1:2", "high surrogate");
    BAD("\"\\ude00\"", "t.json:1:2", "lone low surrogate");
    BAD("\"\\u12g4\"", "t.json:1:2", "\\u escape");
    BAD("\"\\u0000\"", "t.json:1:2", "\\u0000");
    BAD("\"\\x\"", "t.json:1:2", "invalid escape");
    BAD("[01]", "t.json:1:2", "leading zero");
    BAD("[-]", "t.json:1:3", "expected a digit");
    BAD("[1.]", "t.json:1:4", "after '.'");
    BAD("[.5]", "t.json:1:2", "expected a value");
    BAD("[+1]", "t.json:1:2", "expected a value");
    BAD("[1e]", "t.json:1:4", "exponent");
    BAD("[1e400]", "t.json:1:2", "out of range");
    BAD("[NaN]", "t.json:1:2", "expected a value");
    BAD("[tru]", "t.json:1:2", "invalid literal");
    BAD("[truex]", "t.json:1:6", "after literal");
    BAD("{'a': 1}", "t.json:1:2", "expected a string key");
    BAD("['a']", "t.json:1:2", "double quotes");
    BAD("// c\n1", "t.json:1:1", "comments");
    BAD("{\"a\" 1}", "t.json:1:6", "expected ':'");
    BAD("[1 2]", "t.json:1:4", "expected ',' or ']'");
    BAD("1 2", "t.json:1:3", "after the value");
    BAD("", "t.json:1:1", "end of input");
    BAD("  \n  ", "t.json:2:3", "end of input");
    BAD("\xef\xbb\xbf{}", "t.json:1:1", "byte-order mark");
    /* an embedded NUL byte is not whitespace */
    parse_bad("[1]\0", 4, "t.json:1:4", "after the value");
    /* nesting: 200 levels fine, 300 rejected */
    char deep[700];
    for (int depth = 200; depth <= 300; depth += 100) {
        int k = 0;
        for (int i = 0; i < depth; i++) deep[k++] = '[';
        for (int i = 0; i < depth; i++) deep[k++] = ']';
        deep[k] = 0;
        mt_json *j = NULL;
        mt_status st = mt_json_parse(&j, deep, (size_t)k, "t.json");
        if (depth == 200)
            CHECK_MSG(st == MT_OK, "200 levels: %s", mt_error_msg());
        else
            CHECK_MSG(st == MT_ERR_FORMAT && strstr(mt_error_msg(), "nesting"), "300 levels accepted");
        mt_json_free(j);
    }
}

static void test_type_errors(void) {
    mt_json *j = parse_ok("{\n \"a\": \"text\",\n \"b\": 1.5,\n \"c\": [1]\n}");
    if (!j) return;
    int64_t v;
    double d;
    const char *s;
    int b;
    CHECK(mt_json_as_int(mt_json_get(j, "a"), &v, "a") == MT_ERR_FORMAT);
    CHECK_MSG(strstr(mt_error_msg(), "t.json:2:7: a: expected an integer, got string"), "%s", mt_error_msg());
    CHECK(mt_json_as_int(mt_json_get(j, "b"), &v, "b") == MT_ERR_FORMAT);
    CHECK_MSG(strstr(mt_error_msg(), "t.json:3:7: b: expected an integer, got 1.5"), "%s", mt_error_msg());
    CHECK(mt_json_as_string(mt_json_get(j, "b"), &s, "b") == MT_ERR_FORMAT);
    CHECK_MSG(strstr(mt_error_msg(), "expected a string, got number"), "%s", mt_error_msg());
    CHECK(mt_json_as_double(mt_json_get(j, "c"), &d, "c") == MT_ERR_FORMAT);
    CHECK_MSG(strstr(mt_error_msg(), "t.json:4:7: c: expected a number, got array"), "%s", mt_error_msg());
    CHECK(mt_json_as_bool(mt_json_get(j, "a"), &b, NULL) == MT_ERR_FORMAT);
    CHECK_MSG(strstr(mt_error_msg(), "value: expected a boolean"), "%s", mt_error_msg());
    CHECK(mt_json_expect(mt_json_get(j, "c"), MT_JSON_OBJECT, "c") == MT_ERR_FORMAT);
    CHECK_MSG(strstr(mt_error_msg(), "c: expected an object, got array"), "%s", mt_error_msg());
    CHECK(mt_json_expect(mt_json_get(j, "c"), MT_JSON_ARRAY, "c") == MT_OK);
    mt_json_free(j);
}

static void test_file(void) {
    char path[] = "/tmp/mt_test_json_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    const char *text = "{\"labels\": {\"0\": \"background\"},\n \"numTraining\": 2,}";
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    mt_json *j = NULL;
    CHECK(mt_json_parse_file(&j, path) == MT_ERR_FORMAT && j == NULL);
    char want[128];
    snprintf(want, sizeof want, "%s:2:19: trailing comma", path);
    CHECK_MSG(strstr(mt_error_msg(), want), "%s", mt_error_msg());
    unlink(path);
    CHECK(mt_json_parse_file(&j, path) == MT_ERR_IO);
    CHECK_MSG(strstr(mt_error_msg(), path) && strstr(mt_error_msg(), "cannot open"), "%s", mt_error_msg());
}

int main(void) {
    test_values();
    test_strings();
    test_numbers();
    test_errors();
    test_type_errors();
    test_file();
    return mt_test_finish();
}
