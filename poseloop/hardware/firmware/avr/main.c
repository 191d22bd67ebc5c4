/*
 * poseloop reference device as plain AVR C for an ATmega328P at 16 MHz (Arduino Uno/Nano
 * wiring, no Arduino core): the same protocol core and pin mapping as the sketch.
 * UART 115200 8N1 with interrupt-driven receive and transmit rings, a 1 kHz Timer0 clock,
 * a free-running Timer1 at 2 MHz for the microsecond clock, and the camera's exposure
 * strobe on A0 (PC0, pin-change interrupt PCINT8), stamped in its interrupt.
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <string.h>
#include <util/atomic.h>

#include "poseloop_core.h"

#define BAUD 115200
#define BAUD_TOL 3
#include <util/setbaud.h>

#if F_CPU != 16000000UL
#error "the microsecond clock (Timer1 at clk/8) assumes F_CPU = 16 MHz"
#endif

#define RING 64     /* received bytes, a power of two */
#define TX_RING 128 /* bytes to send: a stamped reply and a few strobe reports */

static volatile uint32_t ms_count;
static volatile uint32_t t1_overflows; /* Timer1 overflows: 65536 ticks = 32768 us each */
static volatile uint8_t rx_buf[RING], rx_head, rx_tail;
static volatile uint8_t tx_buf[TX_RING], tx_head, tx_tail;

ISR(TIMER0_COMPA_vect) { ms_count++; }

ISR(TIMER1_OVF_vect) { t1_overflows++; }

/* Strobe on PC0: a rising edge (exposure start) is stamped before anything else. */
ISR(PCINT1_vect) {
    uint32_t t = pl_board_micros();
    if (PINC & _BV(PC0)) {
        pl_strobe(t);
    }
}

ISR(USART_RX_vect) {
    uint8_t c = UDR0;
    uint8_t next = (rx_head + 1) & (RING - 1);
    if (next != rx_tail) { /* full: the byte is lost, the line will be answered ERR */
        rx_buf[rx_head] = c;
        rx_head = next;
    }
}

ISR(USART_UDRE_vect) {
    if (tx_head == tx_tail) {
        UCSR0B &= (uint8_t)~_BV(UDRIE0);
        return;
    }
    UDR0 = tx_buf[tx_tail];
    tx_tail = (tx_tail + 1) & (TX_RING - 1);
}

/* Channels 0..5 are PD2..PD7 (pins 2..7), channels 6..7 are PB0..PB1 (pins 8..9). */
void pl_board_output(uint8_t channel, uint8_t high) {
    volatile uint8_t *port = channel < 6 ? &PORTD : &PORTB;
    uint8_t bit = channel < 6 ? _BV(channel + 2) : _BV(channel - 6);
    if (high) {
        *port |= bit;
    } else {
        *port &= (uint8_t)~bit;
    }
}

uint32_t pl_board_millis(void) {
    uint32_t now;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { now = ms_count; }
    return now;
}

uint32_t pl_board_micros(void) {
    uint32_t high;
    uint16_t low;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
        low = TCNT1;
        high = t1_overflows;
        if ((TIFR1 & _BV(TOV1)) && low < 0x8000) {
            high++; /* overflowed after interrupts were blocked, not yet counted */
        }
    }
    return (high << 15) + (low >> 1); /* 2 ticks per us; wraps at 2^32 us */
}

void pl_board_reply(const char *line) {
    uint8_t len = (uint8_t)strlen(line);
    uint8_t used = (tx_head - tx_tail) & (TX_RING - 1);
    if (len > TX_RING - 1 - used) {
        return; /* the host is not reading: drop the whole reply, never half of it */
    }
    while (*line) {
        tx_buf[tx_head] = (uint8_t)*line++;
        tx_head = (tx_head + 1) & (TX_RING - 1);
    }
    UCSR0B |= _BV(UDRIE0);
}

int main(void) {
    DDRD |= 0xFC; /* PD2..PD7 */
    DDRB |= 0x03; /* PB0..PB1 */
    pl_init();

    UBRR0H = UBRRH_VALUE;
    UBRR0L = UBRRL_VALUE;
#if USE_2X
    UCSR0A |= _BV(U2X0);
#else
    UCSR0A &= (uint8_t)~_BV(U2X0);
#endif
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);

    TCCR0A = _BV(WGM01);             /* CTC */
    TCCR0B = _BV(CS01) | _BV(CS00);  /* clk/64 */
    OCR0A = (uint8_t)(F_CPU / 64 / 1000 - 1);
    TIMSK0 = _BV(OCIE0A);

    TCCR1A = 0;
    TCCR1B = _BV(CS11); /* normal mode, clk/8: 2 MHz */
    TIMSK1 = _BV(TOIE1);

    DDRC &= (uint8_t)~_BV(PC0); /* strobe input (the camera drives it) */
    PCMSK1 = _BV(PCINT8);
    PCICR = _BV(PCIE1);
    sei();

    for (;;) {
        while (rx_tail != rx_head) {
            char c = (char)rx_buf[rx_tail];
            rx_tail = (rx_tail + 1) & (RING - 1);
            pl_receive(c);
        }
        pl_poll();
    }
}
