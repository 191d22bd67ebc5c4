/*
 * poseloop reference device: parses and executes ON n, OFF n, PULSE n ms, PING,
 * WATCHDOG ms, TIMING 0|1 and TIME, and answers each line with PONG, "OK <line>",
 * "TIME <us>" or "ERR <reason>" (the same replies as poseloop.hardware.emulator). Pulses
 * are timed with the board's millisecond clock. With WATCHDOG ms (0 = off) set, ms
 * milliseconds without a byte from the host turn every output off: a host that died or
 * lost its cable cannot leave a stimulus on.
 *
 * Trigger timing (TIMING 1): every ON/OFF/PULSE reply ends with " @<us>", the microsecond
 * clock right after the pin was written, and every rising edge of the camera's exposure
 * strobe is reported as "S <n> <us>" (n counts edges from TIMING 1). Both are on the
 * device's own clock, so exposure -> output latency needs no clock mapping; TIME tells the
 * host that clock, to map strobes to its frames.
 */
#include "poseloop_core.h"

#include <string.h>

static char line[PL_MAX_LINE + 1];
static uint8_t line_len;
static uint8_t overflow;
static uint8_t pulsing[PL_CHANNELS];
static uint32_t pulse_end[PL_CHANNELS];
static uint32_t watchdog_ms;  /* 0 = off */
static uint32_t last_rx;      /* millis() of the last byte from the host */
static uint8_t tripped;       /* the watchdog has turned the outputs off since that byte */
static volatile uint8_t timing;  /* TIMING 1: stamp outputs, report strobes */
static volatile uint32_t strobe_seq;
static volatile uint32_t strobe_us[PL_STROBE_RING];
static volatile uint32_t strobe_n[PL_STROBE_RING];
static volatile uint8_t strobe_head, strobe_tail;

/* v in decimal at p, NUL-terminated; returns the end. */
static char *put_u32(char *p, uint32_t v) {
    char digits[10];
    uint8_t n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) {
        *p++ = digits[--n];
    }
    *p = '\0';
    return p;
}

static void reply_ok(uint32_t t_us, uint8_t stamped) {
    char reply[PL_MAX_LINE + 18];
    char *p;
    strcpy(reply, "OK ");
    strcat(reply, line);
    p = reply + strlen(reply);
    if (stamped) {
        *p++ = ' ';
        *p++ = '@';
        p = put_u32(p, t_us);
    }
    *p++ = '\n';
    *p = '\0';
    pl_board_reply(reply);
}

static void set_output(uint8_t channel, uint8_t high) {
    pulsing[channel] = 0;
    pl_board_output(channel, high);
}

/* 1..max_digits decimal digits at *p (advanced past them), or -1. */
static int32_t parse_number(const char **p, uint8_t max_digits) {
    int32_t value = 0;
    uint8_t digits = 0;
    while (**p >= '0' && **p <= '9') {
        if (++digits > max_digits) {
            return -1;
        }
        value = value * 10 + (**p - '0');
        (*p)++;
    }
    return digits ? value : -1;
}

static void execute(void) {
    enum { ON, OFF, PULSE } verb;
    const char *p = line;
    int32_t channel;
    int32_t ms = 0;
    uint32_t t_us;
    char reply[18];

    if (strcmp(line, "PING") == 0) {
        pl_board_reply("PONG\n");
        return;
    }
    if (strcmp(line, "TIME") == 0) {
        strcpy(reply, "TIME ");
        strcat(put_u32(reply + 5, pl_board_micros()), "\n");
        pl_board_reply(reply);
        return;
    }
    if (strcmp(line, "TIMING 0") == 0 || strcmp(line, "TIMING 1") == 0) {
        timing = 0; /* the strobe interrupt stops adding while the ring is reset */
        strobe_head = strobe_tail = 0;
        strobe_seq = 0;
        timing = (uint8_t)(line[7] == '1');
        reply_ok(0, 0);
        return;
    }
    if (strncmp(p, "WATCHDOG ", 9) == 0) {
        p += 9;
        ms = parse_number(&p, 5);
        if (ms < 0 || ms > PL_MAX_WATCHDOG_MS || *p != '\0') {
            pl_board_reply("ERR bad command\n");
            return;
        }
        watchdog_ms = (uint32_t)ms;
        reply_ok(0, 0);
        return;
    }
    if (strncmp(p, "ON ", 3) == 0) {
        verb = ON;
        p += 3;
    } else if (strncmp(p, "OFF ", 4) == 0) {
        verb = OFF;
        p += 4;
    } else if (strncmp(p, "PULSE ", 6) == 0) {
        verb = PULSE;
        p += 6;
    } else {
        pl_board_reply("ERR bad command\n");
        return;
    }
    channel = parse_number(&p, 3);
    if (verb == PULSE && *p == ' ') {
        p++;
        ms = parse_number(&p, 5);
        if (ms < 1 || ms > PL_MAX_PULSE_MS) {
            channel = -1;
        }
    } else if (verb == PULSE) {
        channel = -1;
    }
    if (channel < 0 || channel > 255 || *p != '\0') {
        pl_board_reply("ERR bad command\n");
        return;
    }
    if (channel >= PL_CHANNELS) {
        pl_board_reply("ERR channel out of range\n");
        return;
    }
    set_output((uint8_t)channel, verb != OFF);
    t_us = pl_board_micros();
    if (verb == PULSE) {
        pulse_end[channel] = pl_board_millis() + (uint32_t)ms;
        pulsing[channel] = 1;
    }
    reply_ok(t_us, timing);
}

void pl_strobe(uint32_t t_us) {
    uint8_t next;
    if (!timing) {
        return;
    }
    next = (uint8_t)((strobe_head + 1) & (PL_STROBE_RING - 1));
    if (next != strobe_tail) { /* full: this edge goes unreported (a gap in n) */
        strobe_us[strobe_head] = t_us;
        strobe_n[strobe_head] = strobe_seq;
        strobe_head = next;
    }
    strobe_seq++;
}

void pl_init(void) {
    uint8_t channel;
    for (channel = 0; channel < PL_CHANNELS; channel++) {
        set_output(channel, 0);
    }
    line_len = 0;
    overflow = 0;
    watchdog_ms = 0;
    tripped = 0;
    timing = 0;
    strobe_head = strobe_tail = 0;
}

void pl_receive(char c) {
    last_rx = pl_board_millis();
    tripped = 0;
    if (c != '\n') {
        if (line_len < PL_MAX_LINE) {
            line[line_len++] = c;
        } else {
            overflow = 1;
        }
        return;
    }
    if (line_len > 0 && line[line_len - 1] == '\r') {
        line_len--;
    }
    line[line_len] = '\0';
    if (overflow) {
        pl_board_reply("ERR line too long\n");
    } else {
        execute();
    }
    line_len = 0;
    overflow = 0;
}

void pl_poll(void) {
    uint32_t now = pl_board_millis();
    uint8_t channel;
    char report[25]; /* "S <n> <us>\n": at most 2 + 10 + 1 + 10 + 1 bytes and a NUL */
    char *p;
    while (strobe_tail != strobe_head) {
        report[0] = 'S';
        report[1] = ' ';
        p = put_u32(report + 2, strobe_n[strobe_tail]);
        *p++ = ' ';
        p = put_u32(p, strobe_us[strobe_tail]);
        *p++ = '\n';
        *p = '\0';
        pl_board_reply(report); /* dropped when the host does not read: a gap in n */
        strobe_tail = (uint8_t)((strobe_tail + 1) & (PL_STROBE_RING - 1));
    }
    if (watchdog_ms && !tripped && now - last_rx >= watchdog_ms) {
        tripped = 1;
        for (channel = 0; channel < PL_CHANNELS; channel++) {
            set_output(channel, 0);
        }
    }
    for (channel = 0; channel < PL_CHANNELS; channel++) {
        /* signed difference: correct across the 49-day wrap of the millisecond clock */
        if (pulsing[channel] && (int32_t)(now - pulse_end[channel]) >= 0) {
            set_output(channel, 0);
        }
    }
}
