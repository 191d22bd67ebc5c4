/*
 * poseloop reference device: the line protocol, independent of the board.
 *
 * The board file (poseloop_device.ino for Arduino, or avr/main.c for plain AVR C) defines
 * the four pl_board_* hooks, calls pl_init() once, feeds every received byte to
 * pl_receive() and calls pl_poll() on every pass of its main loop. Nothing here waits.
 * A board with a strobe input calls pl_strobe() (from its interrupt) at each rising edge
 * of the camera's exposure signal.
 */
#ifndef POSELOOP_CORE_H
#define POSELOOP_CORE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PL_CHANNELS 8            /* outputs 0..7 */
#define PL_MAX_LINE 32           /* bytes in one command, newline excluded */
#define PL_MAX_PULSE_MS 60000L   /* PULSE n ms: 1..60000 */
#define PL_MAX_WATCHDOG_MS 60000L /* WATCHDOG ms: 0 (off)..60000 */
#define PL_STROBE_RING 8         /* strobe edges waiting to be reported, a power of two */

/* Board hooks. */
void pl_board_output(uint8_t channel, uint8_t high);
uint32_t pl_board_millis(void);
uint32_t pl_board_micros(void);       /* free-running microsecond clock (wraps at 2^32) */
void pl_board_reply(const char *line); /* one reply, newline included; drop it rather than wait */

/* Protocol core. */
void pl_init(void);         /* all outputs off, empty line buffer */
void pl_receive(char c);    /* one byte from the host; a newline executes the line */
void pl_poll(void);         /* end the pulses that are due; the watchdog; strobe reports */
void pl_strobe(uint32_t t_us); /* a rising strobe edge at t_us (interrupt-safe) */

#ifdef __cplusplus
}
#endif

#endif /* POSELOOP_CORE_H */
