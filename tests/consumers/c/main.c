/*
 * A C program on the C ABI of the generated D0 crate (`effdetc build ... --c-api`): runs the
 * fixture input, writes every output as raw little-endian floats (OUT_DIR/<name>.f32) for the
 * test to compare with the fixture, checks the status codes of bad calls, and detects on the
 * synthetic image the Rust consumer uses (OUT_DIR/detections.f32). A panic injected by the
 * test hook must come back as EFFDET_PANIC, with the handle still usable.
 * Usage: main INPUT.npy OUT_DIR
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "effdet_d0.h"

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                 \
            fprintf(stderr, "\n");                                        \
            return 1;                                                     \
        }                                                                 \
    } while (0)

/* Reads `n` floats from a version-1 little-endian f32 .npy file; null on failure. */
static float *read_npy(const char *path, size_t n) {
    FILE *f = fopen(path, "rb");
    unsigned char head[10];
    float *data = NULL;
    if (!f) return NULL;
    if (fread(head, 1, 10, f) == 10 && memcmp(head, "\x93NUMPY", 6) == 0 && head[6] == 1) {
        long start = 10 + (long)(head[8] | (head[9] << 8));
        data = malloc(n * sizeof(float));
        if (data && (fseek(f, start, SEEK_SET) != 0 || fread(data, sizeof(float), n, f) != n)) {
            free(data);
            data = NULL;
        }
    }
    fclose(f);
    return data;
}

static int write_floats(const char *dir, const char *name, const float *v, size_t n) {
    char path[4096];
    FILE *f;
    size_t written;
    snprintf(path, sizeof path, "%s/%s.f32", dir, name);
    f = fopen(path, "wb");
    if (!f) return 0;
    written = fwrite(v, sizeof(float), n, f);
    return fclose(f) == 0 && written == n;
}

int main(int argc, char **argv) {
    effdet_d0_model *model = (effdet_d0_model *)1; /* must be cleared by a failed create */
    float *outputs[EFFDET_D0_NUM_OUTPUTS];
    float *skip[EFFDET_D0_NUM_OUTPUTS] = {0};
    size_t lens[EFFDET_D0_NUM_OUTPUTS];
    float *input;
    size_t i;
    int s;

    if (argc != 3) {
        fprintf(stderr, "usage: %s INPUT.npy OUT_DIR\n", argv[0]);
        return 2;
    }
    input = read_npy(argv[1], EFFDET_D0_INPUT_LEN);
    CHECK(input != NULL, "cannot read %s", argv[1]);

    /* Metadata. */
    CHECK(effdet_d0_input_len() == EFFDET_D0_INPUT_LEN, "input len");
    CHECK(EFFDET_D0_BATCH == 1, "batch");
    CHECK(effdet_d0_num_outputs() == EFFDET_D0_NUM_OUTPUTS, "num outputs");
    CHECK(strcmp(effdet_d0_output_name(EFFDET_D0_OUTPUT_CLASS_P3), "class_P3") == 0, "name");
    CHECK(strcmp(effdet_d0_output_name(EFFDET_D0_OUTPUT_BOX_P7), "box_P7") == 0, "name");
    CHECK(effdet_d0_output_len(EFFDET_D0_OUTPUT_CLASS_P3) == EFFDET_D0_OUTPUT_CLASS_P3_LEN, "len");
    CHECK(effdet_d0_output_name(EFFDET_D0_NUM_OUTPUTS) == NULL, "name past the end");
    CHECK(effdet_d0_output_len(EFFDET_D0_NUM_OUTPUTS) == 0, "len past the end");
    for (s = 0; s <= 8; s++) CHECK(effdet_d0_status_message(s) != NULL, "message %d", s);

    /* Creating. */
    CHECK(effdet_d0_create(NULL) == EFFDET_NULL_POINTER, "create(NULL)");
    s = effdet_d0_create_from_file("/nonexistent/weights.bin", &model);
    CHECK(s == EFFDET_WEIGHTS && model == NULL, "create_from_file: %s", effdet_d0_status_message(s));
    CHECK(effdet_d0_create_from_file(NULL, &model) == EFFDET_NULL_POINTER, "null path");
    {
        /* A short file, and a device that never ends: refused by size, nothing read. */
        char path[4096];
        FILE *f;
        snprintf(path, sizeof path, "%s/short-weights.bin", argv[2]);
        f = fopen(path, "wb");
        CHECK(f != NULL && fwrite("12345678", 1, 8, f) == 8 && fclose(f) == 0, "write %s", path);
        s = effdet_d0_create_from_file(path, &model);
        CHECK(s == EFFDET_WEIGHTS && model == NULL, "short weights: %s", effdet_d0_status_message(s));
        s = effdet_d0_create_from_file("/dev/zero", &model);
        CHECK(s == EFFDET_WEIGHTS && model == NULL, "/dev/zero: %s", effdet_d0_status_message(s));
        remove(path);
    }
    s = effdet_d0_create(&model);
    CHECK(s == EFFDET_OK && model != NULL, "create: %s", effdet_d0_status_message(s));
    CHECK(effdet_d0_set_threads(model, 0) == EFFDET_BAD_ARGUMENT, "0 threads");
    CHECK(effdet_d0_set_threads(NULL, 1) == EFFDET_NULL_POINTER, "null model");
    CHECK(effdet_d0_set_threads(model, 2) == EFFDET_OK, "2 threads");

    for (i = 0; i < EFFDET_D0_NUM_OUTPUTS; i++) {
        lens[i] = effdet_d0_output_len(i);
        outputs[i] = malloc(lens[i] * sizeof(float));
        CHECK(outputs[i] != NULL, "malloc");
    }

    /* Bad calls: nothing runs, a status says why. */
    CHECK(effdet_d0_forward(NULL, input, EFFDET_D0_INPUT_LEN, outputs, lens, EFFDET_D0_NUM_OUTPUTS) == EFFDET_NULL_POINTER, "null model");
    CHECK(effdet_d0_forward(model, NULL, EFFDET_D0_INPUT_LEN, outputs, lens, EFFDET_D0_NUM_OUTPUTS) == EFFDET_NULL_POINTER, "null input");
    CHECK(effdet_d0_forward(model, input, EFFDET_D0_INPUT_LEN, NULL, lens, EFFDET_D0_NUM_OUTPUTS) == EFFDET_NULL_POINTER, "null outputs");
    CHECK(effdet_d0_forward(model, input, EFFDET_D0_INPUT_LEN, outputs, NULL, EFFDET_D0_NUM_OUTPUTS) == EFFDET_NULL_POINTER, "null lens");
    CHECK(effdet_d0_forward(model, input, EFFDET_D0_INPUT_LEN - 1, outputs, lens, EFFDET_D0_NUM_OUTPUTS) == EFFDET_BAD_LENGTH, "short input");
    CHECK(effdet_d0_forward(model, input, EFFDET_D0_INPUT_LEN, outputs, lens, EFFDET_D0_NUM_OUTPUTS - 1) == EFFDET_BAD_LENGTH, "output count");
    lens[EFFDET_D0_OUTPUT_BOX_P5] -= 1;
    CHECK(effdet_d0_forward(model, input, EFFDET_D0_INPUT_LEN, outputs, lens, EFFDET_D0_NUM_OUTPUTS) == EFFDET_BAD_LENGTH, "short buffer");
    lens[EFFDET_D0_OUTPUT_BOX_P5] += 1;

    /* Overlapping buffers: two outputs in one buffer, an output over the length array or
     * over the input. */
    skip[0] = outputs[1];
    skip[1] = outputs[1];
    CHECK(effdet_d0_forward(model, input, EFFDET_D0_INPUT_LEN, skip, lens, EFFDET_D0_NUM_OUTPUTS) == EFFDET_BAD_ARGUMENT, "two outputs in one buffer");
    skip[0] = NULL;
    skip[1] = (float *)(void *)lens;
    CHECK(effdet_d0_forward(model, input, EFFDET_D0_INPUT_LEN, skip, lens, EFFDET_D0_NUM_OUTPUTS) == EFFDET_BAD_ARGUMENT, "output over the lengths");
    skip[1] = input;
    CHECK(effdet_d0_forward(model, input, EFFDET_D0_INPUT_LEN, skip, lens, EFFDET_D0_NUM_OUTPUTS) == EFFDET_BAD_ARGUMENT, "output over the input");
    skip[1] = NULL;

    /* Only some outputs: null buffers are skipped. */
    skip[EFFDET_D0_OUTPUT_BOX_P7] = outputs[EFFDET_D0_OUTPUT_BOX_P7];
    s = effdet_d0_forward(model, input, EFFDET_D0_INPUT_LEN, skip, lens, EFFDET_D0_NUM_OUTPUTS);
    CHECK(s == EFFDET_OK, "forward with skipped outputs: %s", effdet_d0_status_message(s));

    /* A panic inside (the test hook, on a worker at 2 threads) is EFFDET_PANIC; the handle
     * stays usable, and the real run below uses it. */
    effdet_d0_test_inject_panic(2);
    s = effdet_d0_forward(model, input, EFFDET_D0_INPUT_LEN, outputs, lens, EFFDET_D0_NUM_OUTPUTS);
    CHECK(s == EFFDET_PANIC, "injected panic: %s", effdet_d0_status_message(s));

    /* The real run. */
    s = effdet_d0_forward(model, input, EFFDET_D0_INPUT_LEN, outputs, lens, EFFDET_D0_NUM_OUTPUTS);
    CHECK(s == EFFDET_OK, "forward: %s", effdet_d0_status_message(s));
    for (i = 0; i < EFFDET_D0_NUM_OUTPUTS; i++)
        CHECK(write_floats(argv[2], effdet_d0_output_name(i), outputs[i], lens[i]), "write %s", effdet_d0_output_name(i));

#ifdef EFFDET_D0_MAX_DETECTIONS
    {
        /* The Rust consumer's synthetic image (tests/consumers/standalone/src/main.rs). */
        enum { W = 96, H = 64 };
        static uint8_t pixels[H * W * 3];
        effdet_d0_detection dets[EFFDET_D0_MAX_DETECTIONS];
        float rows[EFFDET_D0_MAX_DETECTIONS * 6];
        size_t count = 0, x, y, c;
        for (y = 0; y < H; y++)
            for (x = 0; x < W; x++)
                for (c = 0; c < 3; c++) pixels[(y * W + x) * 3 + c] = (uint8_t)((x * 7 + y * 13 + c * 50) % 256);
        CHECK(effdet_d0_set_threads(model, 1) == EFFDET_OK, "1 thread");
        CHECK(effdet_d0_detect(model, NULL, W, H, 3, -1.0f, dets, EFFDET_D0_MAX_DETECTIONS, &count) == EFFDET_NULL_POINTER, "null pixels");
        CHECK(effdet_d0_detect(model, pixels, W, H, 3, -1.0f, dets, EFFDET_D0_MAX_DETECTIONS, NULL) == EFFDET_NULL_POINTER, "null count");
        CHECK(effdet_d0_detect(model, pixels, W, H, 3, -1.0f, NULL, 1, &count) == EFFDET_NULL_POINTER, "null out");
        CHECK(effdet_d0_detect(model, pixels, SIZE_MAX, 2, 3, -1.0f, dets, 1, &count) == EFFDET_BAD_ARGUMENT, "overflow");
        CHECK(effdet_d0_detect(model, pixels, W, H, 2, -1.0f, dets, 1, &count) == EFFDET_DETECT, "2 channels");
        s = effdet_d0_detect(model, pixels, W, H, 3, -1.0f, dets, 1, &count);
        CHECK(s == EFFDET_BUFFER_TOO_SMALL && count > 1, "capacity 1: %s, count %zu", effdet_d0_status_message(s), count);
        s = effdet_d0_detect(model, pixels, W, H, 3, -1.0f, dets, EFFDET_D0_MAX_DETECTIONS, &count);
        CHECK(s == EFFDET_OK && count <= EFFDET_D0_MAX_DETECTIONS, "detect: %s", effdet_d0_status_message(s));
        for (i = 0; i < count; i++) {
            memcpy(&rows[i * 6], dets[i].bbox, 4 * sizeof(float));
            rows[i * 6 + 4] = dets[i].score;
            rows[i * 6 + 5] = (float)dets[i].class_id;
        }
        CHECK(write_floats(argv[2], "detections", rows, count * 6), "write detections");
        printf("ok detect: %zu detections\n", count);
    }
#endif

    CHECK(effdet_d0_free(model) == EFFDET_OK, "free");
    CHECK(effdet_d0_free(NULL) == EFFDET_OK, "free(NULL)");
    for (i = 0; i < EFFDET_D0_NUM_OUTPUTS; i++) free(outputs[i]);
    free(input);
    printf("ok\n");
    return 0;
}
